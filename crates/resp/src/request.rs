//! Parsing client requests on the server side: multibulk frames
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every client library sends) and
//! inline commands (`GET k\r\n`, what telnet and `redis-cli` piping send).
//!
//! Every size a frame announces is checked against [`Limits`] as soon as the
//! announcement is read, before the data behind it is buffered, so a peer
//! cannot make the server hold more than the limits allow. This module never
//! executes anything and never blocks.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{blob_end, int_line, sat_i64, IntLine, IntSpec};
use crate::ProtocolError;

/// Size limits for one request. The defaults follow Redis where Redis has a
/// limit, and are tighter where Redis's would let one client take gigabytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments in one command (multibulk count or inline words).
    /// Default 1,048,576, as in Redis.
    pub args_max: usize,
    /// Largest single argument. Default 8 MiB.
    pub bulk_bytes_max: usize,
    /// Longest inline command line, without its line ending. Default 64 KiB,
    /// Redis's `PROTO_INLINE_MAX_SIZE`.
    pub inline_bytes_max: usize,
    /// Longest `*N` or `$N` line, not counting the marker and `\r\n`.
    /// Default 64 KiB, as in Redis; only leading zeros can make a valid
    /// count line long, since bytes other than digits are rejected at once.
    pub multibulk_header_bytes_max: usize,
    /// Largest whole request frame in bytes, headers included. Default
    /// 128 MiB. Together with the above this bounds what one connection
    /// buffers for one command.
    pub request_bytes_max: usize,
}

/// Default of [`Limits::args_max`].
pub const DEFAULT_ARGS_MAX: usize = 1024 * 1024;
/// Default of [`Limits::bulk_bytes_max`].
pub const DEFAULT_BULK_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Default of [`Limits::inline_bytes_max`].
pub const DEFAULT_INLINE_BYTES_MAX: usize = 64 * 1024;
/// Default of [`Limits::multibulk_header_bytes_max`].
pub const DEFAULT_MULTIBULK_HEADER_BYTES_MAX: usize = 64 * 1024;
/// Default of [`Limits::request_bytes_max`].
pub const DEFAULT_REQUEST_BYTES_MAX: usize = 128 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            args_max: DEFAULT_ARGS_MAX,
            bulk_bytes_max: DEFAULT_BULK_BYTES_MAX,
            inline_bytes_max: DEFAULT_INLINE_BYTES_MAX,
            multibulk_header_bytes_max: DEFAULT_MULTIBULK_HEADER_BYTES_MAX,
            request_bytes_max: DEFAULT_REQUEST_BYTES_MAX,
        }
    }
}

/// Arguments found by the parser: ranges into the input for multibulk
/// (so the decoder can hand out zero-copy slices), owned bytes for inline
/// commands (whose quotes and escapes change the bytes).
enum Args {
    Ranges(Vec<Range<usize>>),
    Owned(Vec<Vec<u8>>),
}

/// Parses one request from the start of `buf`.
///
/// Returns `Ok(None)` if `buf` holds only the beginning of a request (an
/// empty buffer included), or `Ok(Some((args, consumed)))`. `args` is empty
/// for an empty inline line or a `*0` / `*-1` frame: Redis skips those
/// silently, and so should the caller (after consuming the bytes).
/// [`RequestDecoder`] does that for you.
///
/// An `Err` means the stream is out of sync: reply with the error and close
/// the connection.
pub fn parse_command(buf: &[u8], limits: &Limits) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
    Ok(parse_frame(buf, limits, &mut Progress::default())?.map(|(args, consumed)| {
        let args = match args {
            Args::Ranges(ranges) => ranges.into_iter().map(|r| Bytes::copy_from_slice(&buf[r])).collect(),
            Args::Owned(owned) => owned.into_iter().map(Bytes::from).collect(),
        };
        (args, consumed)
    }))
}

/// Appends `args` as one multibulk request, as a client sends it.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    out.put_u8(b'*');
    out.put_slice(args.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.reserve(arg.len() + 16);
        out.put_u8(b'$');
        out.put_slice(arg.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// How far a multibulk frame has been parsed. A decoder keeps it between
/// reads so that a frame arriving in many pieces is parsed once in all, not
/// once per piece (which would cost O(args) per read).
#[derive(Debug, Default)]
struct Progress {
    /// The argument count, once the `*N` line has been read.
    count: Option<usize>,
    /// Arguments complete so far.
    args: Vec<Range<usize>>,
    /// Where the next argument starts.
    pos: usize,
}

fn parse_frame(buf: &[u8], limits: &Limits, progress: &mut Progress) -> Result<Option<(Args, usize)>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits, progress),
        Some(_) => parse_inline(buf, limits),
    }
}

fn parse_multibulk(
    buf: &[u8],
    limits: &Limits,
    progress: &mut Progress,
) -> Result<Option<(Args, usize)>, ProtocolError> {
    let count = match progress.count {
        Some(count) => count,
        None => {
            let count_spec = IntSpec {
                min: -1,
                max: sat_i64(limits.args_max),
                line_bytes_max: limits.multibulk_header_bytes_max,
                invalid: ProtocolError::InvalidMultibulkLength,
                too_long: ProtocolError::MultibulkHeaderTooBig,
            };
            let (count, pos) = match int_line(buf, 1, &count_spec)? {
                IntLine::Incomplete => return Ok(None),
                IntLine::Done { value, next } => (value, next),
            };
            if count <= 0 {
                return Ok(Some((Args::Ranges(Vec::new()), pos)));
            }
            let count = count as usize;
            // The count is only a claim: never reserve much for it.
            *progress = Progress { count: Some(count), args: Vec::with_capacity(count.min(64)), pos };
            count
        }
    };
    let bulk_spec = IntSpec {
        min: 0,
        max: sat_i64(limits.bulk_bytes_max),
        line_bytes_max: limits.multibulk_header_bytes_max,
        invalid: ProtocolError::InvalidBulkLength,
        too_long: ProtocolError::BulkHeaderTooBig,
    };
    while progress.args.len() < count {
        let pos = progress.pos;
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        if marker != b'$' {
            return Err(ProtocolError::ExpectedBulk(crate::ShownByte(marker)));
        }
        let (len, data_start) = match int_line(buf, pos + 1, &bulk_spec)? {
            IntLine::Incomplete => return Ok(None),
            IntLine::Done { value, next } => (value as usize, next),
        };
        if data_start.saturating_add(len).saturating_add(2) > limits.request_bytes_max {
            return Err(ProtocolError::RequestTooBig);
        }
        match blob_end(buf, data_start, len)? {
            None => return Ok(None),
            Some(next) => {
                progress.args.push(data_start..data_start + len);
                progress.pos = next;
            }
        }
    }
    let done = std::mem::take(progress);
    Ok(Some((Args::Ranges(done.args), done.pos)))
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Option<(Args, usize)>, ProtocolError> {
    // Look no further than the limit: a longer line is an error whether or
    // not its end has arrived.
    let window = &buf[..buf.len().min(limits.inline_bytes_max.saturating_add(1))];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() > limits.inline_bytes_max { Err(ProtocolError::InlineTooBig) } else { Ok(None) };
    };
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line, limits.args_max)?;
    Ok(Some((Args::Owned(args), newline + 1)))
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline command line into words the way Redis does: spaces
/// separate words; `"..."` allows spaces and the escapes `\n \r \t \b \a \\
/// \" \xHH`; `'...'` allows spaces and `\'`. A closing quote must be followed
/// by a space or the end of the line.
fn split_args(line: &[u8], args_max: usize) -> Result<Vec<Vec<u8>>, ProtocolError> {
    #[derive(PartialEq)]
    enum Mode {
        Plain,
        Double,
        Single,
    }
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i == n {
            return Ok(args);
        }
        if args.len() == args_max {
            return Err(ProtocolError::TooManyInlineArgs);
        }
        let mut word = Vec::new();
        let mut mode = Mode::Plain;
        loop {
            let Some(&c) = line.get(i) else {
                if mode != Mode::Plain {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                break;
            };
            match mode {
                Mode::Plain => match c {
                    _ if is_space(c) => break,
                    b'"' => mode = Mode::Double,
                    b'\'' => mode = Mode::Single,
                    _ => word.push(c),
                },
                Mode::Double => match c {
                    b'\\' if i + 1 < n => {
                        let e = line[i + 1];
                        let hex = if e == b'x' && i + 3 < n {
                            hex_value(line[i + 2]).zip(hex_value(line[i + 3]))
                        } else {
                            None
                        };
                        if let Some((hi, lo)) = hex {
                            word.push(hi * 16 + lo);
                            i += 3;
                        } else {
                            word.push(match e {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            i += 1;
                        }
                    }
                    b'"' => {
                        if line.get(i + 1).is_some_and(|&next| !is_space(next)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    _ => word.push(c),
                },
                Mode::Single => match c {
                    b'\\' if line.get(i + 1) == Some(&b'\'') => {
                        word.push(b'\'');
                        i += 1;
                    }
                    b'\'' => {
                        if line.get(i + 1).is_some_and(|&next| !is_space(next)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    _ => word.push(c),
                },
            }
            i += 1;
        }
        args.push(word);
    }
}

/// Buffers a connection's incoming bytes and hands out whole commands,
/// zero-copy for multibulk arguments. Empty commands are skipped.
///
/// Feed it with [`RequestDecoder::read_from`] (or
/// [`RequestDecoder::extend_from_slice`]), then call [`RequestDecoder::next_command`]
/// until it returns `Ok(None)`. Memory stays within the [`Limits`] given:
/// the buffer never holds more than one incomplete request, and an
/// oversized one is an error before its data is read. After an `Err` the
/// stream is out of sync; do not call `next_command` again.
#[derive(Debug)]
pub struct RequestDecoder {
    buf: BytesMut,
    limits: Limits,
    progress: Progress,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestDecoder { buf: BytesMut::with_capacity(16 * 1024), limits, progress: Progress::default() }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reads once from `reader` into the buffer (at most 64 KiB); returns
    /// the number of bytes read, 0 at end of stream.
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

    /// Bytes received but not yet returned as commands.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The next complete, non-empty command, if one has arrived.
    pub fn next_command(&mut self) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            let parsed = match parse_frame(&self.buf, &self.limits, &mut self.progress) {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.progress = Progress::default();
                    return Err(e);
                }
            };
            let Some((args, consumed)) = parsed else {
                return Ok(None);
            };
            let frame = self.buf.split_to(consumed).freeze();
            let args: Vec<Bytes> = match args {
                Args::Ranges(ranges) => ranges.into_iter().map(|r| frame.slice(r)).collect(),
                Args::Owned(owned) => owned.into_iter().map(Bytes::from).collect(),
            };
            if !args.is_empty() {
                return Ok(Some(args));
            }
        }
    }
}

impl Default for RequestDecoder {
    fn default() -> Self {
        RequestDecoder::new(Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Result<Option<(Vec<Vec<u8>>, usize)>, ProtocolError>;

    fn parse(input: &[u8]) -> Parsed {
        parse_with(input, &Limits::default())
    }

    fn parse_with(input: &[u8], limits: &Limits) -> Parsed {
        parse_command(input, limits).map(|r| r.map(|(args, n)| (args.into_iter().map(|a| a.to_vec()).collect(), n)))
    }

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn small() -> Limits {
        Limits {
            args_max: 4,
            bulk_bytes_max: 10,
            inline_bytes_max: 16,
            multibulk_header_bytes_max: 5,
            request_bytes_max: 64,
        }
    }

    #[test]
    fn multibulk() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest";
        assert_eq!(parse(input).unwrap(), Some((words(&["GET", "k"]), input.len() - 4)));
    }

    #[test]
    fn multibulk_binary_and_empty_args() {
        let input = b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\n\r\n\x00\xff\r\n";
        let expected = vec![b"SET".to_vec(), vec![], b"\r\n\x00\xff".to_vec()];
        assert_eq!(parse(input).unwrap(), Some((expected, input.len())));
    }

    #[test]
    fn empty_multibulk_is_skippable() {
        assert_eq!(parse(b"*0\r\n").unwrap(), Some((vec![], 4)));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Some((vec![], 5)));
    }

    #[test]
    fn incomplete_frames() {
        for input in [&b""[..], b"*", b"*2", b"*2\r", b"*2\r\n", b"*2\r\n$", b"*2\r\n$3\r\nGE", b"*2\r\n$3\r\nGET\r"] {
            assert_eq!(parse(input).unwrap(), None, "{:?}", String::from_utf8_lossy(input));
        }
        assert_eq!(parse(b"GET k").unwrap(), None);
        assert_eq!(parse(b"GET k\r").unwrap(), None);
    }

    #[test]
    fn invalid_multibulk_length() {
        for input in
            [&b"*x\r\n"[..], b"*\r\n", b"*-\r\n", b"*-2\r\n", b"*1x", b"*99999999999999999999999\r\n", b"*2 \r\n"]
        {
            assert_eq!(
                parse(input),
                Err(ProtocolError::InvalidMultibulkLength),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(ProtocolError::InvalidMultibulkLength.to_string(), "Protocol error: invalid multibulk length");
    }

    #[test]
    fn too_many_args_fails_before_they_arrive() {
        assert_eq!(parse_with(b"*5\r\n", &small()), Err(ProtocolError::InvalidMultibulkLength));
        assert_eq!(parse_with(b"*5", &small()), Err(ProtocolError::InvalidMultibulkLength));
        assert!(parse_with(b"*4\r\n", &small()).unwrap().is_none());
        assert_eq!(parse(b"*1048577\r\n"), Err(ProtocolError::InvalidMultibulkLength));
        assert_eq!(parse(b"*1048576\r\n").unwrap(), None);
    }

    #[test]
    fn invalid_bulk_length() {
        for input in [&b"*1\r\n$x\r\n"[..], b"*1\r\n$-1\r\n", b"*1\r\n$\r\n", b"*1\r\n$1 \r\n", b"*1\r\n$-"] {
            assert_eq!(parse(input), Err(ProtocolError::InvalidBulkLength), "{:?}", String::from_utf8_lossy(input));
        }
        assert_eq!(ProtocolError::InvalidBulkLength.to_string(), "Protocol error: invalid bulk length");
    }

    #[test]
    fn oversized_bulk_fails_before_its_data() {
        assert_eq!(parse_with(b"*1\r\n$11\r\n", &small()), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(parse_with(b"*1\r\n$11", &small()), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(parse_with(b"*1\r\n$10\r\n", &small()).unwrap(), None);
        assert_eq!(parse(b"*1\r\n$8388609\r\n"), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(parse(b"*1\r\n$8388608\r\n").unwrap(), None);
    }

    #[test]
    fn oversized_request_fails_before_its_data() {
        // Four arguments of 10 bytes fit each limit but not 64 bytes in all.
        let mut input = b"*4\r\n".to_vec();
        for _ in 0..3 {
            input.extend_from_slice(b"$10\r\n0123456789\r\n");
        }
        input.extend_from_slice(b"$10\r\n");
        assert_eq!(parse_with(&input, &small()), Err(ProtocolError::RequestTooBig));
    }

    #[test]
    fn expected_dollar() {
        assert_eq!(parse(b"*1\r\n:3\r\n"), Err(ProtocolError::ExpectedBulk(crate::ShownByte(b':'))));
        assert_eq!(parse(b"*1\r\nx").unwrap_err().to_string(), "Protocol error: expected '$', got 'x'");
        assert_eq!(parse(b"*1\r\n\x01").unwrap_err().to_string(), "Protocol error: expected '$', got '\\x01'");
    }

    #[test]
    fn header_too_long() {
        assert_eq!(parse_with(b"*000000", &small()), Err(ProtocolError::MultibulkHeaderTooBig));
        assert_eq!(parse_with(b"*00001\r\n", &small()).unwrap(), None);
        assert_eq!(parse_with(b"*1\r\n$000000", &small()), Err(ProtocolError::BulkHeaderTooBig));
        assert_eq!(ProtocolError::MultibulkHeaderTooBig.to_string(), "Protocol error: too big mbulk count string");
        assert_eq!(ProtocolError::BulkHeaderTooBig.to_string(), "Protocol error: too big bulk count string");
    }

    #[test]
    fn bad_line_endings() {
        assert_eq!(parse(b"*1\rx"), Err(ProtocolError::BadLineEnding));
        assert_eq!(parse(b"*1\r\n$1\r\nab"), Err(ProtocolError::ExpectedCrlfAfterBulk));
        assert_eq!(parse(b"*1\r\n$1\r\na\rb"), Err(ProtocolError::ExpectedCrlfAfterBulk));
    }

    #[test]
    fn inline_commands() {
        assert_eq!(parse(b"PING\r\n").unwrap(), Some((words(&["PING"]), 6)));
        assert_eq!(parse(b"set  k\tv\n").unwrap(), Some((words(&["set", "k", "v"]), 9)));
        assert_eq!(parse(b"\r\n").unwrap(), Some((vec![], 2)));
        assert_eq!(parse(b"   \n").unwrap(), Some((vec![], 4)));
    }

    #[test]
    fn inline_quotes() {
        let got = parse(b"SET \"a b\" 'c d'\r\n").unwrap().unwrap().0;
        assert_eq!(got, words(&["SET", "a b", "c d"]));
        let got = parse(b"SET \"\\x41\\n\\\"\\\\\\q\" 'it\\'s'\n").unwrap().unwrap().0;
        assert_eq!(got, vec![b"SET".to_vec(), b"A\n\"\\q".to_vec(), b"it's".to_vec()]);
        let got = parse(b"x\"y z\" \"\"\n").unwrap().unwrap().0;
        assert_eq!(got, vec![b"xy z".to_vec(), vec![]]);
        // \x with fewer than two hex digits is just the letter x.
        let got = parse(b"\"\\xZ1\"\n").unwrap().unwrap().0;
        assert_eq!(got, vec![b"xZ1".to_vec()]);
    }

    #[test]
    fn unbalanced_quotes() {
        for input in [&b"SET \"abc\n"[..], b"SET 'abc\n", b"SET \"a\"b\n", b"SET 'a'b\n", b"\"\\\"\n"] {
            assert_eq!(parse(input), Err(ProtocolError::UnbalancedQuotes), "{:?}", String::from_utf8_lossy(input));
        }
        assert_eq!(ProtocolError::UnbalancedQuotes.to_string(), "Protocol error: unbalanced quotes in request");
    }

    #[test]
    fn inline_too_big() {
        let limits = small();
        assert_eq!(parse_with(&[b'a'; 16], &limits).unwrap(), None);
        assert_eq!(parse_with(&[b'a'; 17], &limits), Err(ProtocolError::InlineTooBig));
        let mut line = vec![b'a'; 17];
        line.push(b'\n');
        assert_eq!(parse_with(&line, &limits), Err(ProtocolError::InlineTooBig));
        let mut line = vec![b'a'; 16];
        line.push(b'\n');
        assert!(parse_with(&line, &limits).unwrap().is_some());
        assert_eq!(ProtocolError::InlineTooBig.to_string(), "Protocol error: too big inline request");
    }

    #[test]
    fn inline_too_many_args() {
        assert_eq!(parse_with(b"a b c d e\n", &small()), Err(ProtocolError::TooManyInlineArgs));
        assert_eq!(parse_with(b"a b c d\n", &small()).unwrap().unwrap().0.len(), 4);
    }

    #[test]
    fn encode_command_is_multibulk() {
        let mut out = BytesMut::new();
        encode_command(&["SET", "k", ""], &mut out);
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn decoder_pipelines_and_skips_empty_commands() {
        let mut d = RequestDecoder::default();
        d.extend_from_slice(b"PING\r\n\r\n*0\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI");
        assert_eq!(d.next_command().unwrap().unwrap(), vec![Bytes::from_static(b"PING")]);
        assert_eq!(d.next_command().unwrap().unwrap(), vec![Bytes::from_static(b"GET"), Bytes::from_static(b"k")]);
        assert_eq!(d.next_command().unwrap(), None);
        assert_eq!(d.buffered_bytes(), 10);
        d.extend_from_slice(b"NG\r\n");
        assert_eq!(d.next_command().unwrap().unwrap(), vec![Bytes::from_static(b"PING")]);
        assert_eq!(d.next_command().unwrap(), None);
        assert_eq!(d.buffered_bytes(), 0);
    }

    #[test]
    fn decoder_resumes_a_frame_fed_byte_by_byte() {
        let mut input = BytesMut::new();
        let args: Vec<String> = (0..300).map(|i| format!("arg{i}")).collect();
        encode_command(&args, &mut input);
        let mut d = RequestDecoder::default();
        for (i, &b) in input.iter().enumerate() {
            d.extend_from_slice(&[b]);
            let got = d.next_command().unwrap();
            assert_eq!(got.is_some(), i == input.len() - 1, "at byte {i}");
            if let Some(cmd) = got {
                assert_eq!(cmd.len(), 300);
                assert_eq!(&cmd[299][..], b"arg299");
            }
        }
        // The progress was reset: the next frame parses from its own start.
        d.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(d.next_command().unwrap().unwrap(), vec![Bytes::from_static(b"PING")]);
    }

    #[tokio::test]
    async fn decoder_reads_from_a_stream_in_bounded_steps() {
        let mut input = b"PING\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100 * 1024));
        let mut reader = &input[..];
        let mut d = RequestDecoder::default();
        assert_eq!(d.read_from(&mut reader).await.unwrap(), 64 * 1024);
        assert_eq!(d.next_command().unwrap().unwrap(), vec![Bytes::from_static(b"PING")]);
        // The rest is one inline line longer than 64 KiB: an error once
        // the limit is crossed, not a buffer that keeps growing.
        assert_eq!(d.next_command(), Ok(None));
        assert_eq!(d.read_from(&mut reader).await.unwrap(), input.len() - 64 * 1024);
        assert_eq!(d.next_command(), Err(ProtocolError::InlineTooBig));
        assert_eq!(d.read_from(&mut reader).await.unwrap(), 0);
    }

    #[test]
    fn decoder_reports_errors() {
        let mut d = RequestDecoder::new(small());
        d.extend_from_slice(b"*1\r\n$99\r\n");
        assert_eq!(d.next_command(), Err(ProtocolError::InvalidBulkLength));
    }
}
