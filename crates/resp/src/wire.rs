//! Line-level helpers shared by the request and reply parsers.

use crate::ProtocolError;

/// Result of reading one `<integer>\r\n` line.
pub(crate) enum IntLine {
    /// More bytes are needed.
    Incomplete,
    /// The value and the index just past the `\r\n`.
    Done { value: i64, next: usize },
}

/// Bounds and error choices for [`int_line`].
pub(crate) struct IntSpec {
    pub min: i64,
    pub max: i64,
    /// Most bytes the number may take before its `\r\n` (sign and leading
    /// zeros included).
    pub line_bytes_max: usize,
    /// Returned for a non-digit, an empty number or a value out of bounds.
    pub invalid: ProtocolError,
    /// Returned when the line is longer than `line_bytes_max`.
    pub too_long: ProtocolError,
}

/// Reads a signed decimal integer starting at `buf[start]` and ending in
/// `\r\n`. Validates each byte as it arrives: a stray byte or a value already
/// outside `[min, max]` is an error at once, before the rest of the line (or
/// the data a length announces) has arrived. Every strict prefix of a valid
/// line gives `Incomplete`.
pub(crate) fn int_line(buf: &[u8], start: usize, spec: &IntSpec) -> Result<IntLine, ProtocolError> {
    let mut pos = start;
    let mut negative = false;
    let mut magnitude: u64 = 0;
    let mut digits = 0usize;
    let bound = |neg: bool| {
        if neg {
            spec.min.unsigned_abs()
        } else {
            spec.max.max(0) as u64
        }
    };
    loop {
        if pos - start > spec.line_bytes_max {
            return Err(spec.too_long.clone());
        }
        let Some(&b) = buf.get(pos) else {
            return Ok(IntLine::Incomplete);
        };
        match b {
            b'-' if pos == start => {
                if spec.min >= 0 {
                    return Err(spec.invalid.clone());
                }
                negative = true;
            }
            b'0'..=b'9' => {
                magnitude = magnitude
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(u64::from(b - b'0')))
                    .ok_or_else(|| spec.invalid.clone())?;
                if magnitude > bound(negative) {
                    return Err(spec.invalid.clone());
                }
                digits += 1;
            }
            b'\r' => {
                if digits == 0 {
                    return Err(spec.invalid.clone());
                }
                return match buf.get(pos + 1) {
                    None => Ok(IntLine::Incomplete),
                    Some(b'\n') => {
                        let value = if negative { (magnitude as i64).wrapping_neg() } else { magnitude as i64 };
                        if value < spec.min || value > spec.max {
                            return Err(spec.invalid.clone());
                        }
                        Ok(IntLine::Done { value, next: pos + 2 })
                    }
                    Some(_) => Err(ProtocolError::BadLineEnding),
                };
            }
            _ => return Err(spec.invalid.clone()),
        }
        pos += 1;
    }
}

/// Checks the `\r\n` that must follow `len` bytes of blob data starting at
/// `data_start`, as far as it has arrived. Returns the index past it, or
/// `None` if the data or its terminator is still incomplete.
pub(crate) fn blob_end(buf: &[u8], data_start: usize, len: usize) -> Result<Option<usize>, ProtocolError> {
    let end = data_start.checked_add(len).ok_or(ProtocolError::InvalidBulkLength)?;
    if let Some(&b) = buf.get(end) {
        if b != b'\r' {
            return Err(ProtocolError::ExpectedCrlfAfterBulk);
        }
    }
    match buf.get(end + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(end + 2)),
        Some(_) => Err(ProtocolError::ExpectedCrlfAfterBulk),
    }
}

/// `usize` to `i64`, saturating (limits are never that large in practice).
pub(crate) fn sat_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
