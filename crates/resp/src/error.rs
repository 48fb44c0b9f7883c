//! The one error type of this crate: what is wrong with the bytes on the wire.
//!
//! Messages follow Redis's wording where Redis has one, so that a client that
//! talks to both sees the same text after `-ERR `.

use std::fmt;

/// A byte shown the way a person can read it: printable ASCII as itself,
/// anything else as `\xNN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownByte(pub u8);

impl fmt::Display for ShownByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() || self.0 == b' ' {
            write!(f, "{}", self.0 as char)
        } else {
            write!(f, "\\x{:02x}", self.0)
        }
    }
}

/// Malformed or oversized RESP input. A connection that produced one of these
/// is out of sync and should be closed after the error is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*N`: N is not a number, or above `Limits::args_max`.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$N`: N is not a number, negative (in a request), or above the bulk limit.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// Inside a multibulk request, an argument did not start with `$`.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(ShownByte),
    /// The `*N` line is longer than `Limits::multibulk_header_bytes_max`.
    #[error("Protocol error: too big mbulk count string")]
    MultibulkHeaderTooBig,
    /// A `$N` line is longer than `Limits::multibulk_header_bytes_max`.
    #[error("Protocol error: too big bulk count string")]
    BulkHeaderTooBig,
    /// An inline request line is longer than `Limits::inline_bytes_max`.
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// An inline request has more than `Limits::args_max` arguments.
    #[error("Protocol error: too many arguments in inline request")]
    TooManyInlineArgs,
    /// An inline request has an unterminated quote, or a closing quote that
    /// is not followed by a space or the end of the line.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// Bulk data was not followed by `\r\n`.
    #[error("Protocol error: expected CRLF after bulk data")]
    ExpectedCrlfAfterBulk,
    /// A line ended in a bare `\r` or `\n` instead of `\r\n`.
    #[error("Protocol error: expected CRLF line ending")]
    BadLineEnding,
    /// A request frame is larger than `Limits::request_bytes_max`.
    #[error("Protocol error: too big request")]
    RequestTooBig,
    /// A reply line (simple string, error, number) is longer than the limit.
    #[error("Protocol error: too long line in reply")]
    LineTooLong,
    /// A reply started with a byte that is not a RESP2/RESP3 type marker.
    #[error("Protocol error: unknown reply type '{0}'")]
    UnknownType(ShownByte),
    /// `:` (or a length) that is not a valid 64-bit signed integer.
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    /// `,` that is not a valid floating point number.
    #[error("Protocol error: invalid double")]
    InvalidDouble,
    /// `#` followed by something other than `t` or `f`.
    #[error("Protocol error: invalid boolean")]
    InvalidBoolean,
    /// `*`, `%`, `~` or `>` with a length that is not a number, negative
    /// (other than the RESP2 null array), or above the aggregate limit.
    #[error("Protocol error: invalid aggregate length")]
    InvalidAggregateLength,
    /// `=` whose payload lacks the three-letter format and colon.
    #[error("Protocol error: invalid verbatim string")]
    InvalidVerbatim,
    /// Aggregates nested deeper than the reply limit allows.
    #[error("Protocol error: reply nested deeper than {max} levels")]
    TooDeep {
        /// The configured limit.
        max: usize,
    },
}
