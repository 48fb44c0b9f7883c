//! Reply values and their encoding in RESP2 and RESP3.
//!
//! Encoding never fails: anything RESP2 cannot express is downgraded the way
//! Redis itself downgrades it for a RESP2 connection.

use bytes::{BufMut, Bytes, BytesMut};

/// Which dialect a connection speaks: RESP2 until the client sends `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// The classic protocol every Redis client speaks.
    #[default]
    Resp2,
    /// Adds maps, sets, doubles, booleans, verbatim strings and a single null.
    Resp3,
}

/// A RESP value, as a server replies or a client receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`. Carriage returns and line feeds are replaced by spaces when
    /// encoded, since the format cannot carry them.
    SimpleString(String),
    /// `-ERR message`. The message should start with an upper-case code
    /// (`ERR`, `WRONGTYPE`, `TRYAGAIN`, ...). Line breaks become spaces.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`: binary safe.
    Bulk(Bytes),
    /// The null bulk string: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// The null array: `*-1` in RESP2, `_` in RESP3 (which has one null).
    NullArray,
    /// `*N` followed by N values.
    Array(Vec<Value>),
    /// RESP3 `%N`; a flat array of keys and values in RESP2.
    Map(Vec<(Value, Value)>),
    /// RESP3 `~N`; an array in RESP2.
    Set(Vec<Value>),
    /// RESP3 `,3.14`; a bulk string in RESP2.
    Double(f64),
    /// RESP3 `#t` / `#f`; the integer 1 / 0 in RESP2.
    Boolean(bool),
    /// RESP3 `=N\r\ntxt:...` (always format `txt`); a bulk string in RESP2.
    Verbatim(String),
}

impl Value {
    /// `+OK`, the most common reply.
    pub fn ok() -> Self {
        Value::SimpleString("OK".to_owned())
    }

    /// A bulk string copied from `data`.
    pub fn bulk(data: impl AsRef<[u8]>) -> Self {
        Value::Bulk(Bytes::copy_from_slice(data.as_ref()))
    }

    /// An error reply; `msg` should start with its code, e.g. `"ERR syntax error"`.
    pub fn error(msg: impl Into<String>) -> Self {
        Value::Error(msg.into())
    }

    /// The bytes of a bulk, simple or verbatim string; `None` for other types.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            Value::SimpleString(s) | Value::Verbatim(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The integer of an `Integer` reply.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// Whether this is either kind of null.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null | Value::NullArray)
    }
}

/// Appends `v` to `out` in the dialect `proto`.
pub fn encode(v: &Value, proto: Protocol, out: &mut BytesMut) {
    match v {
        Value::SimpleString(s) => encode_line(b'+', s, out),
        Value::Error(s) => encode_line(b'-', s, out),
        Value::Integer(i) => {
            out.put_u8(b':');
            put_decimal(*i, out);
            out.put_slice(b"\r\n");
        }
        Value::Bulk(b) => encode_blob(b'$', b, out),
        Value::Null => match proto {
            Protocol::Resp2 => out.put_slice(b"$-1\r\n"),
            Protocol::Resp3 => out.put_slice(b"_\r\n"),
        },
        Value::NullArray => match proto {
            Protocol::Resp2 => out.put_slice(b"*-1\r\n"),
            Protocol::Resp3 => out.put_slice(b"_\r\n"),
        },
        Value::Array(items) => {
            encode_header(b'*', items.len(), out);
            for item in items {
                encode(item, proto, out);
            }
        }
        Value::Map(pairs) => {
            match proto {
                Protocol::Resp2 => encode_header(b'*', pairs.len().saturating_mul(2), out),
                Protocol::Resp3 => encode_header(b'%', pairs.len(), out),
            }
            for (k, val) in pairs {
                encode(k, proto, out);
                encode(val, proto, out);
            }
        }
        Value::Set(items) => {
            let marker = match proto {
                Protocol::Resp2 => b'*',
                Protocol::Resp3 => b'~',
            };
            encode_header(marker, items.len(), out);
            for item in items {
                encode(item, proto, out);
            }
        }
        Value::Double(d) => {
            let text = format_double(*d);
            match proto {
                Protocol::Resp2 => encode_blob(b'$', text.as_bytes(), out),
                Protocol::Resp3 => {
                    out.put_u8(b',');
                    out.put_slice(text.as_bytes());
                    out.put_slice(b"\r\n");
                }
            }
        }
        Value::Boolean(b) => match proto {
            Protocol::Resp2 => out.put_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
            Protocol::Resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        },
        Value::Verbatim(s) => match proto {
            Protocol::Resp2 => encode_blob(b'$', s.as_bytes(), out),
            Protocol::Resp3 => {
                encode_header(b'=', s.len() + 4, out);
                out.put_slice(b"txt:");
                out.put_slice(s.as_bytes());
                out.put_slice(b"\r\n");
            }
        },
    }
}

/// Encodes `v` into a fresh buffer.
pub fn encode_to_vec(v: &Value, proto: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(v, proto, &mut out);
    out.to_vec()
}

/// Formats a double so that parsing it back gives the same bits: `inf`,
/// `-inf`, `nan`, integers without a trailing `.0`, else Rust's shortest
/// round-trip form (`0.1`, `1e300`).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".to_owned();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let s = format!("{d:?}");
    match s.strip_suffix(".0") {
        Some(int) => int.to_owned(),
        None => s,
    }
}

fn encode_line(marker: u8, s: &str, out: &mut BytesMut) {
    out.reserve(s.len() + 3);
    out.put_u8(marker);
    for &b in s.as_bytes() {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

fn encode_header(marker: u8, len: usize, out: &mut BytesMut) {
    out.put_u8(marker);
    put_decimal(len as i64, out);
    out.put_slice(b"\r\n");
}

fn encode_blob(marker: u8, data: &[u8], out: &mut BytesMut) {
    out.reserve(data.len() + 16);
    encode_header(marker, data.len(), out);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

fn put_decimal(n: i64, out: &mut BytesMut) {
    // i64::MIN has 20 characters with its sign.
    let mut digits = [0u8; 20];
    let mut pos = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        pos -= 1;
        digits[pos] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        pos -= 1;
        digits[pos] = b'-';
    }
    out.put_slice(&digits[pos..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value, proto: Protocol) -> String {
        String::from_utf8(encode_to_vec(v, proto)).unwrap()
    }

    #[test]
    fn simple_types() {
        for proto in [Protocol::Resp2, Protocol::Resp3] {
            assert_eq!(enc(&Value::ok(), proto), "+OK\r\n");
            assert_eq!(enc(&Value::error("ERR bad"), proto), "-ERR bad\r\n");
            assert_eq!(enc(&Value::Integer(0), proto), ":0\r\n");
            assert_eq!(enc(&Value::Integer(-17), proto), ":-17\r\n");
            assert_eq!(enc(&Value::Integer(i64::MIN), proto), ":-9223372036854775808\r\n");
            assert_eq!(enc(&Value::Integer(i64::MAX), proto), ":9223372036854775807\r\n");
            assert_eq!(enc(&Value::bulk("foo"), proto), "$3\r\nfoo\r\n");
            assert_eq!(enc(&Value::bulk(""), proto), "$0\r\n\r\n");
            assert_eq!(enc(&Value::Array(vec![]), proto), "*0\r\n");
        }
    }

    #[test]
    fn line_breaks_in_simple_strings_become_spaces() {
        assert_eq!(enc(&Value::error("ERR a\r\nb"), Protocol::Resp2), "-ERR a  b\r\n");
        assert_eq!(enc(&Value::SimpleString("x\ny".into()), Protocol::Resp3), "+x y\r\n");
    }

    #[test]
    fn nulls_per_protocol() {
        assert_eq!(enc(&Value::Null, Protocol::Resp2), "$-1\r\n");
        assert_eq!(enc(&Value::NullArray, Protocol::Resp2), "*-1\r\n");
        assert_eq!(enc(&Value::Null, Protocol::Resp3), "_\r\n");
        assert_eq!(enc(&Value::NullArray, Protocol::Resp3), "_\r\n");
    }

    #[test]
    fn nested_array() {
        let v = Value::Array(vec![Value::Integer(1), Value::Array(vec![Value::bulk("a"), Value::Null])]);
        assert_eq!(enc(&v, Protocol::Resp2), "*2\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n");
    }

    #[test]
    fn map_and_set_downgrade_in_resp2() {
        let m = Value::Map(vec![(Value::bulk("k"), Value::Integer(1)), (Value::bulk("j"), Value::Null)]);
        assert_eq!(enc(&m, Protocol::Resp3), "%2\r\n$1\r\nk\r\n:1\r\n$1\r\nj\r\n_\r\n");
        assert_eq!(enc(&m, Protocol::Resp2), "*4\r\n$1\r\nk\r\n:1\r\n$1\r\nj\r\n$-1\r\n");
        let s = Value::Set(vec![Value::Integer(7)]);
        assert_eq!(enc(&s, Protocol::Resp3), "~1\r\n:7\r\n");
        assert_eq!(enc(&s, Protocol::Resp2), "*1\r\n:7\r\n");
    }

    #[test]
    fn double_boolean_verbatim() {
        assert_eq!(enc(&Value::Double(1.5), Protocol::Resp3), ",1.5\r\n");
        assert_eq!(enc(&Value::Double(1.5), Protocol::Resp2), "$3\r\n1.5\r\n");
        assert_eq!(enc(&Value::Double(3.0), Protocol::Resp3), ",3\r\n");
        assert_eq!(enc(&Value::Double(f64::INFINITY), Protocol::Resp3), ",inf\r\n");
        assert_eq!(enc(&Value::Double(f64::NEG_INFINITY), Protocol::Resp2), "$4\r\n-inf\r\n");
        assert_eq!(enc(&Value::Double(f64::NAN), Protocol::Resp3), ",nan\r\n");
        assert_eq!(enc(&Value::Boolean(true), Protocol::Resp3), "#t\r\n");
        assert_eq!(enc(&Value::Boolean(false), Protocol::Resp3), "#f\r\n");
        assert_eq!(enc(&Value::Boolean(true), Protocol::Resp2), ":1\r\n");
        assert_eq!(enc(&Value::Boolean(false), Protocol::Resp2), ":0\r\n");
        assert_eq!(enc(&Value::Verbatim("hi".into()), Protocol::Resp3), "=6\r\ntxt:hi\r\n");
        assert_eq!(enc(&Value::Verbatim("hi".into()), Protocol::Resp2), "$2\r\nhi\r\n");
    }

    #[test]
    fn doubles_format_to_round_trip() {
        for d in [0.1, -0.0, 1e300, 1e-300, 123456789.125, f64::MIN_POSITIVE, f64::MAX, -2.5] {
            let s = format_double(d);
            let back: f64 = s.parse().unwrap();
            assert_eq!(back.to_bits(), d.to_bits(), "{d} -> {s}");
        }
    }

    #[test]
    fn accessors() {
        assert_eq!(Value::bulk("x").as_bytes(), Some(&b"x"[..]));
        assert_eq!(Value::Integer(3).as_integer(), Some(3));
        assert_eq!(Value::ok().as_integer(), None);
        assert!(Value::error("ERR").is_error());
        assert!(Value::Null.is_null() && Value::NullArray.is_null());
        assert!(!Value::Integer(0).is_null());
    }
}
