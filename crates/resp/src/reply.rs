//! Parsing replies on the client side, RESP2 and RESP3 alike (a reply's
//! first byte says which type it is, so no mode is needed).
//!
//! Nesting depth, line lengths, blob lengths and aggregate lengths are all
//! bounded by [`ReplyLimits`], and a declared length above its limit is an
//! error before the data arrives.

use bytes::{Bytes, BytesMut};

use crate::wire::{blob_end, int_line, sat_i64, IntLine, IntSpec};
use crate::{ProtocolError, ShownByte, Value};

/// Bounds on what one reply may contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Deepest nesting of aggregates (arrays, maps, sets). Default 128.
    pub depth_max: usize,
    /// Largest bulk, verbatim or blob error payload. Default 512 MiB,
    /// Redis's `proto-max-bulk-len`.
    pub bulk_bytes_max: usize,
    /// Most elements in one array or set, or pairs in one map. Default 2^24.
    pub aggregate_len_max: usize,
    /// Longest simple string, error, integer, double or big number line.
    /// Default 1 MiB.
    pub line_bytes_max: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        ReplyLimits {
            depth_max: 128,
            bulk_bytes_max: 512 * 1024 * 1024,
            aggregate_len_max: 1 << 24,
            line_bytes_max: 1024 * 1024,
        }
    }
}

/// Parses one value from the start of `buf` with the default limits.
/// `Ok(None)` means more bytes are needed; `Ok(Some((value, consumed)))`
/// gives the value and how many bytes it took.
pub fn parse_value(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    parse_value_with(buf, &ReplyLimits::default())
}

/// [`parse_value`] with explicit limits.
///
/// Beyond the types of [`Value`], this accepts RESP3 push frames (`>`) as
/// arrays, blob errors (`!`) as errors and big numbers (`(`) as bulk strings
/// holding their digits. Attributes (`|`) are rejected. Text that is not
/// UTF-8 in simple strings, errors and verbatim strings is replaced with
/// U+FFFD rather than failing the whole connection.
pub fn parse_value_with(buf: &[u8], limits: &ReplyLimits) -> Result<Option<(Value, usize)>, ProtocolError> {
    parse_resumable(buf, limits, &mut Progress::default())
}

/// Buffers a connection's incoming bytes and hands out whole replies.
/// A large reply arriving in many reads is parsed once overall, not once
/// per read. After an `Err` the stream is out of sync; stop using it.
#[derive(Debug)]
pub struct ReplyDecoder {
    buf: BytesMut,
    limits: ReplyLimits,
    progress: Progress,
}

impl ReplyDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: ReplyLimits) -> Self {
        ReplyDecoder { buf: BytesMut::with_capacity(16 * 1024), limits, progress: Progress::default() }
    }

    /// Reads once from `reader` (at most 64 KiB); returns the number of
    /// bytes read, 0 at end of stream.
    pub async fn read_from<R>(&mut self, reader: &mut R) -> std::io::Result<usize>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        const READ_BYTES: usize = 64 * 1024;
        self.buf.reserve(READ_BYTES);
        let mut limited = (&mut *reader).take(READ_BYTES as u64);
        limited.read_buf(&mut self.buf).await
    }

    /// Appends bytes that were read elsewhere.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Changes the limits for the bytes not yet parsed.
    pub fn set_limits(&mut self, limits: ReplyLimits) {
        self.limits = limits;
    }

    /// Bytes received but not yet returned as values.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The next complete value, if one has arrived.
    pub fn next_value(&mut self) -> Result<Option<Value>, ProtocolError> {
        match parse_resumable(&self.buf, &self.limits, &mut self.progress) {
            Ok(Some((value, consumed))) => {
                let _ = self.buf.split_to(consumed);
                Ok(Some(value))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.progress = Progress::default();
                Err(e)
            }
        }
    }
}

impl Default for ReplyDecoder {
    fn default() -> Self {
        ReplyDecoder::new(ReplyLimits::default())
    }
}

type Step = Result<Option<(Value, usize)>, ProtocolError>;

/// An aggregate whose elements are still arriving.
#[derive(Debug)]
struct Frame {
    marker: u8,
    elements: usize,
    items: Vec<Value>,
}

impl Frame {
    fn finish(self) -> Value {
        match self.marker {
            b'%' => {
                let mut pairs = Vec::with_capacity(self.items.len() / 2);
                let mut it = self.items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Value::Map(pairs)
            }
            b'~' => Value::Set(self.items),
            _ => Value::Array(self.items),
        }
    }
}

/// How far a reply has been parsed: the open aggregates, innermost last,
/// and where the next element starts. Kept by [`ReplyDecoder`] between
/// reads, so a large reply arriving in many pieces is parsed once, and
/// nesting uses this heap stack rather than the call stack.
#[derive(Debug, Default)]
struct Progress {
    open: Vec<Frame>,
    pos: usize,
}

/// One element at a time: scalars complete at once, aggregate headers open
/// a frame, and a frame that receives its last element becomes a value of
/// its parent.
fn parse_resumable(buf: &[u8], limits: &ReplyLimits, progress: &mut Progress) -> Step {
    'element: loop {
        let depth = progress.open.len();
        let Some((token, next)) = parse_token(buf, progress.pos, depth, limits)? else {
            return Ok(None);
        };
        progress.pos = next;
        let mut value = match token {
            Token::Value(v) => v,
            Token::Open(frame) if frame.elements > 0 => {
                progress.open.push(frame);
                continue 'element;
            }
            Token::Open(frame) => frame.finish(),
        };
        loop {
            let Some(mut parent) = progress.open.pop() else {
                let consumed = progress.pos;
                *progress = Progress::default();
                return Ok(Some((value, consumed)));
            };
            parent.items.push(value);
            if parent.items.len() < parent.elements {
                progress.open.push(parent);
                continue 'element;
            }
            value = parent.finish();
        }
    }
}

enum Token {
    Value(Value),
    Open(Frame),
}

fn parse_token(
    buf: &[u8],
    pos: usize,
    depth: usize,
    limits: &ReplyLimits,
) -> Result<Option<(Token, usize)>, ProtocolError> {
    let Some(&marker) = buf.get(pos) else {
        return Ok(None);
    };
    if matches!(marker, b'*' | b'~' | b'>' | b'%') {
        return aggregate_header(buf, marker, pos + 1, depth, limits);
    }
    Ok(scalar(buf, marker, pos + 1, limits)?.map(|(v, next)| (Token::Value(v), next)))
}

fn scalar(buf: &[u8], marker: u8, body: usize, limits: &ReplyLimits) -> Step {
    match marker {
        b'+' => Ok(text_line(buf, body, limits)?.map(|(t, next)| (Value::SimpleString(lossy(t)), next))),
        b'-' => Ok(text_line(buf, body, limits)?.map(|(t, next)| (Value::Error(lossy(t)), next))),
        b':' => {
            let spec = IntSpec {
                min: i64::MIN,
                max: i64::MAX,
                line_bytes_max: limits.line_bytes_max,
                invalid: ProtocolError::InvalidInteger,
                too_long: ProtocolError::LineTooLong,
            };
            Ok(match int_line(buf, body, &spec)? {
                IntLine::Incomplete => None,
                IntLine::Done { value, next } => Some((Value::Integer(value), next)),
            })
        }
        b'$' => Ok(blob(buf, body, -1, limits)?.map(|(data, next)| match data {
            None => (Value::Null, next),
            Some(d) => (Value::Bulk(Bytes::copy_from_slice(d)), next),
        })),
        b'!' => {
            Ok(blob(buf, body, 0, limits)?.map(|(data, next)| (Value::Error(lossy(data.unwrap_or_default())), next)))
        }
        b'=' => match blob(buf, body, 0, limits)? {
            None => Ok(None),
            Some((data, next)) => {
                let data = data.unwrap_or_default();
                if data.len() < 4 || data[3] != b':' {
                    return Err(ProtocolError::InvalidVerbatim);
                }
                Ok(Some((Value::Verbatim(lossy(&data[4..])), next)))
            }
        },
        b'_' => Ok(crlf(buf, body)?.map(|next| (Value::Null, next))),
        b'#' => {
            let value = match buf.get(body) {
                None => return Ok(None),
                Some(b't') => true,
                Some(b'f') => false,
                Some(_) => return Err(ProtocolError::InvalidBoolean),
            };
            Ok(crlf(buf, body + 1)?.map(|next| (Value::Boolean(value), next)))
        }
        b',' => match text_line(buf, body, limits)? {
            None => Ok(None),
            Some((text, next)) => Ok(Some((Value::Double(parse_double(text)?), next))),
        },
        b'(' => match text_line(buf, body, limits)? {
            None => Ok(None),
            Some((text, next)) => {
                let digits = text.strip_prefix(b"-").or_else(|| text.strip_prefix(b"+")).unwrap_or(text);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(ProtocolError::InvalidInteger);
                }
                Ok(Some((Value::Bulk(Bytes::copy_from_slice(text)), next)))
            }
        },
        other => Err(ProtocolError::UnknownType(ShownByte(other))),
    }
}

fn aggregate_header(
    buf: &[u8],
    marker: u8,
    body: usize,
    depth: usize,
    limits: &ReplyLimits,
) -> Result<Option<(Token, usize)>, ProtocolError> {
    if depth >= limits.depth_max {
        return Err(ProtocolError::TooDeep { max: limits.depth_max });
    }
    let spec = IntSpec {
        // Only RESP2 arrays have a null form.
        min: if marker == b'*' { -1 } else { 0 },
        max: sat_i64(limits.aggregate_len_max),
        line_bytes_max: limits.line_bytes_max,
        invalid: ProtocolError::InvalidAggregateLength,
        too_long: ProtocolError::LineTooLong,
    };
    let (len, next) = match int_line(buf, body, &spec)? {
        IntLine::Incomplete => return Ok(None),
        IntLine::Done { value, next } => (value, next),
    };
    if len < 0 {
        return Ok(Some((Token::Value(Value::NullArray), next)));
    }
    let len = len as usize;
    let elements = if marker == b'%' { len.saturating_mul(2) } else { len };
    // The length is only a claim until the elements arrive: reserve little.
    let frame = Frame { marker, elements, items: Vec::with_capacity(elements.min(64)) };
    Ok(Some((Token::Open(frame), next)))
}

/// A `<len>\r\n<data>\r\n` blob; `Some(None)` data for the null length -1
/// when `min` allows it.
#[allow(clippy::type_complexity)]
fn blob<'a>(
    buf: &'a [u8],
    body: usize,
    min: i64,
    limits: &ReplyLimits,
) -> Result<Option<(Option<&'a [u8]>, usize)>, ProtocolError> {
    let spec = IntSpec {
        min,
        max: sat_i64(limits.bulk_bytes_max),
        line_bytes_max: limits.line_bytes_max,
        invalid: ProtocolError::InvalidBulkLength,
        too_long: ProtocolError::LineTooLong,
    };
    let (len, start) = match int_line(buf, body, &spec)? {
        IntLine::Incomplete => return Ok(None),
        IntLine::Done { value, next } => (value, next),
    };
    if len < 0 {
        return Ok(Some((None, start)));
    }
    let len = len as usize;
    Ok(blob_end(buf, start, len)?.map(|next| (Some(&buf[start..start + len]), next)))
}

/// The bytes of a line up to `\r\n`, which they may not contain.
fn text_line<'a>(
    buf: &'a [u8],
    start: usize,
    limits: &ReplyLimits,
) -> Result<Option<(&'a [u8], usize)>, ProtocolError> {
    let mut pos = start;
    loop {
        if pos - start > limits.line_bytes_max {
            return Err(ProtocolError::LineTooLong);
        }
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'\r') => return Ok(crlf(buf, pos)?.map(|next| (&buf[start..pos], next))),
            Some(b'\n') => return Err(ProtocolError::BadLineEnding),
            Some(_) => pos += 1,
        }
    }
}

/// Expects `\r\n` at `pos`.
fn crlf(buf: &[u8], pos: usize) -> Result<Option<usize>, ProtocolError> {
    match (buf.get(pos), buf.get(pos + 1)) {
        (None, _) | (Some(b'\r'), None) => Ok(None),
        (Some(b'\r'), Some(b'\n')) => Ok(Some(pos + 2)),
        _ => Err(ProtocolError::BadLineEnding),
    }
}

fn parse_double(text: &[u8]) -> Result<f64, ProtocolError> {
    let s = std::str::from_utf8(text).map_err(|_| ProtocolError::InvalidDouble)?;
    match s {
        "inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        "nan" | "-nan" => Ok(f64::NAN),
        _ if s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')) => {
            s.parse().map_err(|_| ProtocolError::InvalidDouble)
        }
        _ => Err(ProtocolError::InvalidDouble),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Value {
        match parse_value(input) {
            Ok(Some((v, n))) => {
                assert_eq!(n, input.len(), "consumed for {:?}", String::from_utf8_lossy(input));
                v
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn err(input: &[u8]) -> ProtocolError {
        match parse_value(input) {
            Err(e) => e,
            other => panic!("{:?}: expected an error, got {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn resp2_types() {
        assert_eq!(one(b"+OK\r\n"), Value::ok());
        assert_eq!(one(b"+\r\n"), Value::SimpleString(String::new()));
        assert_eq!(one(b"-ERR no\r\n"), Value::error("ERR no"));
        assert_eq!(one(b":-42\r\n"), Value::Integer(-42));
        assert_eq!(one(b":9223372036854775807\r\n"), Value::Integer(i64::MAX));
        assert_eq!(one(b":-9223372036854775808\r\n"), Value::Integer(i64::MIN));
        assert_eq!(one(b"$3\r\na\r\n\r\n"), Value::bulk("a\r\n"));
        assert_eq!(one(b"$0\r\n\r\n"), Value::bulk(""));
        assert_eq!(one(b"$-1\r\n"), Value::Null);
        assert_eq!(one(b"*-1\r\n"), Value::NullArray);
        assert_eq!(one(b"*0\r\n"), Value::Array(vec![]));
        assert_eq!(
            one(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"),
            Value::Array(vec![Value::Integer(1), Value::Array(vec![Value::bulk("x")])])
        );
    }

    #[test]
    fn resp3_types() {
        assert_eq!(one(b"_\r\n"), Value::Null);
        assert_eq!(one(b"#t\r\n"), Value::Boolean(true));
        assert_eq!(one(b"#f\r\n"), Value::Boolean(false));
        assert_eq!(one(b",1.25\r\n"), Value::Double(1.25));
        assert_eq!(one(b",-3\r\n"), Value::Double(-3.0));
        assert_eq!(one(b",1e300\r\n"), Value::Double(1e300));
        assert_eq!(one(b",inf\r\n"), Value::Double(f64::INFINITY));
        assert_eq!(one(b",-inf\r\n"), Value::Double(f64::NEG_INFINITY));
        assert!(matches!(one(b",nan\r\n"), Value::Double(d) if d.is_nan()));
        assert_eq!(one(b"=8\r\ntxt:ab\r\n\r\n"), Value::Verbatim("ab\r\n".into()));
        assert_eq!(one(b"%1\r\n+k\r\n:1\r\n"), Value::Map(vec![(Value::SimpleString("k".into()), Value::Integer(1))]));
        assert_eq!(one(b"%0\r\n"), Value::Map(vec![]));
        assert_eq!(one(b"~2\r\n:1\r\n:2\r\n"), Value::Set(vec![Value::Integer(1), Value::Integer(2)]));
        assert_eq!(one(b">1\r\n+msg\r\n"), Value::Array(vec![Value::SimpleString("msg".into())]));
        assert_eq!(one(b"!5\r\nERR x\r\n"), Value::error("ERR x"));
        assert_eq!(one(b"(-12345678901234567890\r\n"), Value::bulk("-12345678901234567890"));
    }

    #[test]
    fn invalid_utf8_text_is_replaced() {
        assert_eq!(one(b"+a\xffb\r\n"), Value::SimpleString("a\u{fffd}b".into()));
    }

    #[test]
    fn incomplete() {
        for input in [
            &b""[..],
            b"+OK",
            b"+OK\r",
            b":1",
            b"$3\r\nab",
            b"$3\r\nabc\r",
            b"*2\r\n:1\r\n",
            b"#",
            b"#t\r",
            b"_",
            b"_\r",
            b"%1\r\n+k\r\n",
        ] {
            assert_eq!(parse_value(input), Ok(None), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn trailing_bytes_are_left() {
        assert_eq!(parse_value(b":1\r\n:2\r\n"), Ok(Some((Value::Integer(1), 4))));
    }

    #[test]
    fn errors() {
        assert_eq!(err(b"?x\r\n"), ProtocolError::UnknownType(ShownByte(b'?')));
        assert_eq!(err(b"|1\r\n"), ProtocolError::UnknownType(ShownByte(b'|')));
        assert_eq!(err(b":1.5\r\n"), ProtocolError::InvalidInteger);
        assert_eq!(err(b":\r\n"), ProtocolError::InvalidInteger);
        assert_eq!(err(b":99999999999999999999\r\n"), ProtocolError::InvalidInteger);
        assert_eq!(err(b":9223372036854775808\r\n"), ProtocolError::InvalidInteger);
        assert_eq!(err(b"(12a\r\n"), ProtocolError::InvalidInteger);
        assert_eq!(err(b",abc\r\n"), ProtocolError::InvalidDouble);
        assert_eq!(err(b",\r\n"), ProtocolError::InvalidDouble);
        assert_eq!(err(b",infinity\r\n"), ProtocolError::InvalidDouble);
        assert_eq!(err(b"#x\r\n"), ProtocolError::InvalidBoolean);
        assert_eq!(err(b"#tx"), ProtocolError::BadLineEnding);
        assert_eq!(err(b"$-2\r\n"), ProtocolError::InvalidBulkLength);
        assert_eq!(err(b"$x\r\n"), ProtocolError::InvalidBulkLength);
        assert_eq!(err(b"!-1\r\n"), ProtocolError::InvalidBulkLength);
        assert_eq!(err(b"$1\r\nab\r\n"), ProtocolError::ExpectedCrlfAfterBulk);
        assert_eq!(err(b"*-2\r\n"), ProtocolError::InvalidAggregateLength);
        assert_eq!(err(b"%-1\r\n"), ProtocolError::InvalidAggregateLength);
        assert_eq!(err(b"~x\r\n"), ProtocolError::InvalidAggregateLength);
        assert_eq!(err(b"=3\r\ntxt\r\n"), ProtocolError::InvalidVerbatim);
        assert_eq!(err(b"=4\r\ntxt;\r\n"), ProtocolError::InvalidVerbatim);
        assert_eq!(err(b"+a\nb\r\n"), ProtocolError::BadLineEnding);
        assert_eq!(err(b"+a\rb\r\n"), ProtocolError::BadLineEnding);
        assert_eq!(err(b"_x"), ProtocolError::BadLineEnding);
        assert_eq!(err(b"*1\r\n?"), ProtocolError::UnknownType(ShownByte(b'?')));
        assert_eq!(ProtocolError::UnknownType(ShownByte(0)).to_string(), "Protocol error: unknown reply type '\\x00'");
    }

    #[test]
    fn decoder_resumes_a_reply_fed_byte_by_byte() {
        let mut input = b"*3\r\n%1\r\n+k\r\n~2\r\n:1\r\n:2\r\n*0\r\n$2\r\nab\r\n".to_vec();
        input.extend_from_slice(b":7\r\n");
        let mut d = ReplyDecoder::default();
        let first_len = input.len() - 4;
        for (i, &b) in input[..first_len].iter().enumerate() {
            d.extend_from_slice(&[b]);
            let got = d.next_value().unwrap();
            assert_eq!(got.is_some(), i == first_len - 1, "at byte {i}");
            if let Some(v) = got {
                let set = Value::Set(vec![Value::Integer(1), Value::Integer(2)]);
                let map = Value::Map(vec![(Value::SimpleString("k".into()), set)]);
                assert_eq!(v, Value::Array(vec![map, Value::Array(vec![]), Value::bulk("ab")]));
            }
        }
        d.extend_from_slice(&input[first_len..]);
        assert_eq!(d.next_value().unwrap(), Some(Value::Integer(7)));
        assert_eq!(d.buffered_bytes(), 0);
        d.extend_from_slice(b"?");
        assert!(d.next_value().is_err());
    }

    #[test]
    fn depth_limit() {
        let limits = ReplyLimits { depth_max: 3, ..ReplyLimits::default() };
        assert_eq!(
            parse_value_with(b"*1\r\n*1\r\n*1\r\n:1\r\n", &limits).unwrap().unwrap().0,
            Value::Array(vec![Value::Array(vec![Value::Array(vec![Value::Integer(1)])])])
        );
        // The fourth level fails as soon as its marker is seen.
        assert_eq!(parse_value_with(b"*1\r\n*1\r\n%1\r\n~", &limits), Err(ProtocolError::TooDeep { max: 3 }));
        let deep = b"*1\r\n".repeat(1000);
        assert_eq!(parse_value(&deep), Err(ProtocolError::TooDeep { max: 128 }));
        assert_eq!(ProtocolError::TooDeep { max: 3 }.to_string(), "Protocol error: reply nested deeper than 3 levels");
    }

    #[test]
    fn length_limits_fail_before_the_data() {
        let limits = ReplyLimits { bulk_bytes_max: 4, aggregate_len_max: 2, line_bytes_max: 8, depth_max: 8 };
        assert_eq!(parse_value_with(b"$5\r\n", &limits), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(parse_value_with(b"=5", &limits), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(parse_value_with(b"$4\r\n", &limits), Ok(None));
        assert_eq!(parse_value_with(b"*3\r\n", &limits), Err(ProtocolError::InvalidAggregateLength));
        assert_eq!(parse_value_with(b"%3", &limits), Err(ProtocolError::InvalidAggregateLength));
        assert_eq!(parse_value_with(b"+123456789", &limits), Err(ProtocolError::LineTooLong));
        assert_eq!(parse_value_with(b"+12345678", &limits), Ok(None));
        assert_eq!(parse_value_with(b":000000000", &limits), Err(ProtocolError::LineTooLong));
    }
}
