//! Redis glob patterns (`KEYS`, `SCAN MATCH`), matched in O(pattern × key) time at worst.
//!
//! The meaning is exactly redis-server 7.0's `stringmatchlen` (case-sensitive): `*`, `?`,
//! `[abc]`, `[^abc]`, `[a-z]` (either order), `\x`, and its odd corners: `[]` is an empty class,
//! `[a-]` is the range from `a` to `]` (the class then goes on to the next `]`), an unterminated
//! `[abc` is a class of everything after the `[`, a lone `[` matches nothing, range bounds compare
//! as signed bytes (as C's `char` does on x86-64), a trailing `\` is a literal backslash, and an
//! empty key matches only the empty pattern. (`KEYS *` and `SCAN MATCH *` list the empty key
//! too: Redis skips matching for a lone `*`; see [`KeyPattern`].)
//!
//! Redis walks the pattern again for every key byte, recursing at each `*`, and rescans a
//! bracket class for every byte it tests. Here a pattern is compiled once into tokens (a `*`, or
//! a set of bytes that one key byte must be in), and matching is the classic greedy walk that
//! backtracks only to the last `*`: every token is a single byte, so the last `*` is the only
//! choice worth revisiting. No recursion, no blow-up.

/// Longest pattern KEYS and SCAN MATCH accept, in bytes. Redis has no such limit; a longer
/// pattern makes every key's match cost more (time is pattern × key at worst) without a use.
pub const GLOB_PATTERN_BYTES_MAX: usize = 4096;

/// A set of byte values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    const EMPTY: ByteSet = ByteSet([0; 4]);
    const ALL: ByteSet = ByteSet([u64::MAX; 4]);

    fn one(b: u8) -> ByteSet {
        let mut s = ByteSet::EMPTY;
        s.insert(b);
        s
    }

    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    fn complement(self) -> ByteSet {
        ByteSet(self.0.map(|w| !w))
    }

    /// The single byte in the set, if it has exactly one.
    fn single(&self) -> Option<u8> {
        let ones: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        if ones != 1 {
            return None;
        }
        (0..=255u8).find(|b| self.contains(*b))
    }

    /// Adds the bytes between `a` and `b` (either order), compared as signed bytes: Redis
    /// compares C `char`s, which are signed on x86-64, so `[a-\xff]` is `-1..=97`.
    fn insert_range(&mut self, a: u8, b: u8) {
        let (a, b) = (a as i8, b as i8);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        for c in lo..=hi {
            self.insert(c as u8);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Any run of bytes (consecutive `*` are one).
    Star,
    /// Exactly one byte, from the set.
    One(ByteSet),
}

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern` (any bytes; every pattern is valid, as in Redis). The walk over the
    /// pattern is the one `stringmatchlen` makes, so each token starts where Redis would look.
    pub fn new(pattern: &[u8]) -> Glob {
        let p = pattern;
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::One(ByteSet::ALL));
                    i += 1;
                }
                b'[' => {
                    let (set, next) = class(p, i + 1);
                    tokens.push(Token::One(set));
                    i = next;
                }
                b'\\' if p.len() - i >= 2 => {
                    tokens.push(Token::One(ByteSet::one(p[i + 1])));
                    i += 2;
                }
                c => {
                    tokens.push(Token::One(ByteSet::one(c)));
                    i += 1;
                }
            }
        }
        Glob { tokens }
    }

    /// True when `s` matches, as `stringmatchlen(pattern, s, nocase=0)` says.
    pub fn matches(&self, s: &[u8]) -> bool {
        let t = &self.tokens;
        if s.is_empty() {
            // Redis never enters its loop for an empty string: only the empty pattern matches.
            return t.is_empty();
        }
        let (mut ti, mut si) = (0usize, 0usize);
        // The token after the last `*` seen, and the key position that `*` now extends to.
        let mut resume: Option<(usize, usize)> = None;
        while si < s.len() {
            match t.get(ti) {
                Some(Token::Star) => {
                    if ti + 1 == t.len() {
                        return true;
                    }
                    resume = Some((ti + 1, si));
                    ti += 1;
                    continue;
                }
                Some(Token::One(set)) if set.contains(s[si]) => {
                    ti += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
            match resume {
                // Let the last `*` take one more byte and try the rest again from there.
                Some((rt, rs)) => {
                    ti = rt;
                    si = rs + 1;
                    resume = Some((rt, rs + 1));
                }
                None => return false,
            }
        }
        t[ti..].iter().all(|x| *x == Token::Star)
    }

    /// The bytes every non-empty matching key starts with (where a range scan can begin).
    pub fn literal_prefix(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for t in &self.tokens {
            match t {
                Token::One(set) => match set.single() {
                    Some(b) => out.push(b),
                    None => break,
                },
                Token::Star => break,
            }
        }
        out
    }
}

/// The class whose body starts at `p[i]` (just past its `[`): its set and the index after it.
/// Follows `stringmatchlen` step for step, the unterminated and `-]` cases included.
fn class(p: &[u8], mut i: usize) -> (ByteSet, usize) {
    let negate = p.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut set = ByteSet::EMPTY;
    loop {
        let left = p.len() - i;
        if left >= 2 && p[i] == b'\\' {
            set.insert(p[i + 1]);
            i += 1;
        } else if left >= 1 && p[i] == b']' {
            break;
        } else if left == 0 {
            // Unterminated: Redis steps back onto the last byte, and past it below.
            i -= 1;
            break;
        } else if left >= 3 && p[i + 1] == b'-' {
            set.insert_range(p[i], p[i + 2]);
            i += 2;
        } else {
            set.insert(p[i]);
        }
        i += 1;
    }
    (if negate { set.complement() } else { set }, i + 1)
}

/// A KEYS / SCAN MATCH pattern: a lone `*` lists every key without matching (the empty key
/// included, as Redis's `allkeys` shortcut does); anything else is a [`Glob`].
#[derive(Debug, Clone)]
pub enum KeyPattern {
    All,
    Glob(Glob),
}

impl KeyPattern {
    /// The pattern, or the error reply naming [`GLOB_PATTERN_BYTES_MAX`].
    pub fn new(pattern: &[u8]) -> Result<KeyPattern, String> {
        if pattern.len() > GLOB_PATTERN_BYTES_MAX {
            return Err(format!(
                "ERR pattern of {} bytes exceeds the limit of {GLOB_PATTERN_BYTES_MAX} bytes (glob_pattern_bytes_max)",
                pattern.len()
            ));
        }
        Ok(if pattern == b"*" { KeyPattern::All } else { KeyPattern::Glob(Glob::new(pattern)) })
    }

    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            KeyPattern::All => true,
            KeyPattern::Glob(g) => g.matches(key),
        }
    }

    /// Where a range scan for matching keys can start.
    pub fn literal_prefix(&self) -> Vec<u8> {
        match self {
            KeyPattern::All => Vec::new(),
            KeyPattern::Glob(g) => g.literal_prefix(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// redis-server 7.0's `stringmatchlen` (nocase = 0), ported line by line without its
    /// `skipLongerMatches` shortcut: plain recursion, exponential, fine for short inputs. Redis
    /// patterns are NUL-terminated (sds), and the C code reads that terminator in places, so the
    /// pattern gets one here too; `char` is signed, as on x86-64.
    fn reference(pattern: &[u8], string: &[u8]) -> bool {
        let mut p = pattern.to_vec();
        p.push(0);
        rec(&p, 0, pattern.len() as isize, string, 0, string.len() as isize)
    }

    fn rec(p: &[u8], mut pi: usize, mut plen: isize, s: &[u8], mut si: usize, mut slen: isize) -> bool {
        let sc = |b: u8| b as i8 as i32;
        while plen > 0 && slen > 0 {
            match p[pi] {
                b'*' => {
                    while plen > 0 && p[pi + 1] == b'*' {
                        pi += 1;
                        plen -= 1;
                    }
                    if plen == 1 {
                        return true;
                    }
                    while slen > 0 {
                        if rec(p, pi + 1, plen - 1, s, si, slen) {
                            return true;
                        }
                        si += 1;
                        slen -= 1;
                    }
                    return false;
                }
                b'?' => {
                    si += 1;
                    slen -= 1;
                }
                b'[' => {
                    pi += 1;
                    plen -= 1;
                    let not = p[pi] == b'^';
                    if not {
                        pi += 1;
                        plen -= 1;
                    }
                    let mut matched = false;
                    loop {
                        if p[pi] == b'\\' && plen >= 2 {
                            pi += 1;
                            plen -= 1;
                            if p[pi] == s[si] {
                                matched = true;
                            }
                        } else if p[pi] == b']' {
                            break;
                        } else if plen == 0 {
                            pi -= 1;
                            plen += 1;
                            break;
                        } else if plen >= 3 && p[pi + 1] == b'-' {
                            let (mut start, mut end) = (sc(p[pi]), sc(p[pi + 2]));
                            let c = sc(s[si]);
                            if start > end {
                                std::mem::swap(&mut start, &mut end);
                            }
                            pi += 2;
                            plen -= 2;
                            if c >= start && c <= end {
                                matched = true;
                            }
                        } else if p[pi] == s[si] {
                            matched = true;
                        }
                        pi += 1;
                        plen -= 1;
                    }
                    if not {
                        matched = !matched;
                    }
                    if !matched {
                        return false;
                    }
                    si += 1;
                    slen -= 1;
                }
                first => {
                    if first == b'\\' && plen >= 2 {
                        pi += 1;
                        plen -= 1;
                    }
                    if p[pi] != s[si] {
                        return false;
                    }
                    si += 1;
                    slen -= 1;
                }
            }
            pi += 1;
            plen -= 1;
            if slen == 0 {
                while p[pi] == b'*' {
                    pi += 1;
                    plen -= 1;
                }
                break;
            }
        }
        plen == 0 && slen == 0
    }

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p.as_bytes()).matches(s.as_bytes())
    }

    #[test]
    fn redis_globs() {
        assert!(m("*", "abc") && m("a*c", "abbbc") && !m("a*c", "abbbd"));
        assert!(m("h?llo", "hello") && m("h[ae]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && m("h[b-a]llo", "hallo"));
        assert!(m("user:\\*", "user:*") && !m("user:\\*", "user:x"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx") && !m("abc", "abcd") && !m("abcd", "abc"));
        assert!(m("a\\", "a\\"), "a trailing backslash is literal");
    }

    /// The corners, as redis-server 7.0.15 answered `KEYS` for them (crates/cli/tests/
    /// redis_compat.rs asks a real server the same).
    #[test]
    fn redis_corner_cases() {
        assert!(!m("*", "") && !m("**", "") && m("", ""), "an empty key matches only the empty pattern");
        assert!(!m("[", "[") && !m("[", "a"), "a lone [ matches nothing");
        assert!(m("[^", "x") && m("[^]", "]"), "[^ and [^] match any byte");
        assert!(!m("[]", "]") && !m("[]a]", "]") && !m("[]a]", "a]"), "[] is an empty class: it never matches");
        assert!(m("[a-]", "]") && m("[a-]", "^") && !m("[a-]", "\\"), "[a-] is the range ]..a");
        assert!(m("[\\", "\\") && m("[a", "a") && !m("[a", "["), "unterminated classes");
        assert!(m("[\\]]", "]") && m("[\\-]", "-"));
        let hi = Glob::new(b"[a-\xff]");
        assert!(hi.matches(b"A") && hi.matches(b"\xff") && !hi.matches(b"z") && !hi.matches(b"\x80"));
    }

    #[test]
    fn literal_prefixes() {
        let p = |s: &[u8]| Glob::new(s).literal_prefix();
        assert_eq!(p(b"user:*:x"), b"user:");
        assert_eq!(p(b"a\\*b?"), b"a*b");
        assert_eq!(p(b"a[b]c[de]"), b"abc");
        assert_eq!(KeyPattern::new(b"*").unwrap().literal_prefix(), b"");
    }

    #[test]
    fn a_lone_star_lists_every_key_and_long_patterns_are_refused() {
        assert!(KeyPattern::new(b"*").unwrap().matches(b""));
        assert!(!KeyPattern::new(b"**").unwrap().matches(b""));
        let long = vec![b'a'; GLOB_PATTERN_BYTES_MAX + 1];
        let e = KeyPattern::new(&long).unwrap_err();
        assert!(e.contains("glob_pattern_bytes_max") && e.contains("4097"), "{e}");
        assert!(KeyPattern::new(&long[1..]).is_ok());
    }

    /// The pattern of the issue: stars and an unterminated class of 4 KiB against long keys, in
    /// a debug build. The old matcher took seconds per key here.
    #[test]
    fn pathological_patterns_are_cheap() {
        let mut pattern = b"*[".to_vec();
        pattern.resize(GLOB_PATTERN_BYTES_MAX, b'a');
        let g = Glob::new(&pattern);
        let key = vec![b'b'; 64 * 1024];
        assert!(!g.matches(&key));
        let stars = b"*a".repeat(GLOB_PATTERN_BYTES_MAX / 2);
        assert!(!Glob::new(&stars).matches(&vec![b'a'; 1000]));
        assert_eq!(stars.len(), GLOB_PATTERN_BYTES_MAX);
    }

    fn bytes_from(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(alphabet), 0..max)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        #[test]
        fn matches_like_redis(
            pattern in bytes_from(b"ab*?[]^-\\\x00\x80\xff", 10),
            key in bytes_from(b"ab[]^-\\*\x00\x80\xff", 8),
        ) {
            prop_assert_eq!(Glob::new(&pattern).matches(&key), reference(&pattern, &key));
        }

        #[test]
        fn matches_like_redis_on_keys_that_match(pattern in bytes_from(b"ab*?[]^-\\", 10)) {
            // Keys built from the pattern's own bytes, so that matches are common, not rare.
            let key: Vec<u8> = pattern.iter().copied().filter(|c| *c != b'*').collect();
            prop_assert_eq!(Glob::new(&pattern).matches(&key), reference(&pattern, &key));
            let prefix = Glob::new(&pattern).literal_prefix();
            if Glob::new(&pattern).matches(&key) {
                prop_assert!(key.starts_with(&prefix));
            }
        }
    }
}
