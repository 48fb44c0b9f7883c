//! Property tests of the codec: round trips, prefixes, splits, garbage and
//! limits.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rampart_resp::{
    encode, encode_command, parse_command, parse_value, parse_value_with, Limits, Protocol, ProtocolError,
    ReplyDecoder, ReplyLimits, RequestDecoder, Value,
};

/// Text that RESP can carry in a simple string or error (no line breaks).
fn line_text() -> impl Strategy<Value = String> {
    "[^\r\n]{0,20}"
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        line_text().prop_map(Value::SimpleString),
        line_text().prop_map(Value::Error),
        any::<i64>().prop_map(Value::Integer),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::Bulk(Bytes::from(b))),
        Just(Value::Null),
        Just(Value::NullArray),
        // NaN is tested by hand: it is never equal to itself.
        any::<f64>().prop_filter("not NaN", |d| !d.is_nan()).prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        ".{0,20}".prop_map(Value::Verbatim),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::Map),
            proptest::collection::vec(inner, 0..6).prop_map(Value::Set),
        ]
    })
}

/// What `v` reads back as after a trip through `proto`.
fn expected_after(v: &Value, proto: Protocol) -> Value {
    match (v, proto) {
        (Value::NullArray, Protocol::Resp3) => Value::Null,
        (Value::Array(items), _) => Value::Array(items.iter().map(|i| expected_after(i, proto)).collect()),
        (Value::Set(items), Protocol::Resp3) => Value::Set(items.iter().map(|i| expected_after(i, proto)).collect()),
        (Value::Map(pairs), Protocol::Resp3) => {
            Value::Map(pairs.iter().map(|(k, v)| (expected_after(k, proto), expected_after(v, proto))).collect())
        }
        (Value::Set(items), Protocol::Resp2) => Value::Array(items.iter().map(|i| expected_after(i, proto)).collect()),
        (Value::Map(pairs), Protocol::Resp2) => {
            Value::Array(pairs.iter().flat_map(|(k, v)| [expected_after(k, proto), expected_after(v, proto)]).collect())
        }
        (Value::Double(d), Protocol::Resp2) => Value::bulk(rampart_resp::format_double(*d)),
        (Value::Boolean(b), Protocol::Resp2) => Value::Integer(i64::from(*b)),
        (Value::Verbatim(s), Protocol::Resp2) => Value::bulk(s),
        (other, _) => other.clone(),
    }
}

fn encoded(v: &Value, proto: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(v, proto, &mut out);
    out.to_vec()
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Resp2), Just(Protocol::Resp3)]
}

fn command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..8)
}

fn encoded_command(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_command(args, &mut out);
    out.to_vec()
}

fn as_vecs(args: Vec<Bytes>) -> Vec<Vec<u8>> {
    args.into_iter().map(|a| a.to_vec()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn values_round_trip(v in value(), proto in protocol()) {
        let bytes = encoded(&v, proto);
        let (back, used) = parse_value(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(back, expected_after(&v, proto));
    }

    #[test]
    fn value_prefixes_are_incomplete(v in value(), proto in protocol()) {
        let bytes = encoded(&v, proto);
        for cut in 0..bytes.len() {
            prop_assert_eq!(parse_value(&bytes[..cut]), Ok(None), "cut at {}", cut);
        }
    }

    #[test]
    fn values_followed_by_more_parse_the_same(a in value(), b in value(), proto in protocol()) {
        let mut bytes = encoded(&a, proto);
        let first_len = bytes.len();
        bytes.extend_from_slice(&encoded(&b, proto));
        let (first, used) = parse_value(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, first_len);
        prop_assert_eq!(first, expected_after(&a, proto));
        let (second, used2) = parse_value(&bytes[used..]).unwrap().unwrap();
        prop_assert_eq!(used + used2, bytes.len());
        prop_assert_eq!(second, expected_after(&b, proto));
    }

    #[test]
    fn commands_round_trip(args in command()) {
        let bytes = encoded_command(&args);
        let (back, used) = parse_command(&bytes, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(as_vecs(back), args);
    }

    #[test]
    fn command_prefixes_are_incomplete(args in command()) {
        let bytes = encoded_command(&args);
        for cut in 0..bytes.len() {
            prop_assert_eq!(parse_command(&bytes[..cut], &Limits::default()), Ok(None), "cut at {}", cut);
        }
    }

    #[test]
    fn inline_prefixes_are_incomplete(words in proptest::collection::vec("[a-zA-Z0-9]{1,8}", 1..6)) {
        let line = format!("{}\r\n", words.join(" "));
        for cut in 0..line.len() {
            prop_assert_eq!(parse_command(&line.as_bytes()[..cut], &Limits::default()), Ok(None));
        }
        let (back, used) = parse_command(line.as_bytes(), &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, line.len());
        let back: Vec<String> = back.iter().map(|b| String::from_utf8(b.to_vec()).unwrap()).collect();
        prop_assert_eq!(back, words);
    }

    /// Any byte string survives quoting for an inline command (as redis-cli
    /// would quote it) and parsing back.
    #[test]
    fn quoted_inline_args_round_trip(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..5)) {
        let mut line = Vec::new();
        for arg in &args {
            line.push(b'"');
            for &b in arg {
                line.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            line.extend_from_slice(b"\" ");
        }
        line.extend_from_slice(b"\r\n");
        let (back, used) = parse_command(&line, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, line.len());
        prop_assert_eq!(as_vecs(back), args);
    }

    /// Feeding a pipeline of commands to the decoder in chunks split at
    /// arbitrary points gives the same commands as feeding it whole.
    #[test]
    fn decoder_split_anywhere(cmds in proptest::collection::vec(command(), 1..4), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let mut bytes = Vec::new();
        for c in &cmds {
            bytes.extend_from_slice(&encoded_command(c));
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        let mut decoder = RequestDecoder::default();
        let mut got = Vec::new();
        for w in points.windows(2) {
            decoder.extend_from_slice(&bytes[w[0]..w[1]]);
            while let Some(cmd) = decoder.next_command().unwrap() {
                got.push(as_vecs(cmd));
            }
        }
        prop_assert_eq!(got, cmds);
        prop_assert_eq!(decoder.buffered_bytes(), 0);
    }

    /// Replies fed to the reply decoder in arbitrary chunks come out whole,
    /// in order, equal to what parsing them in one piece gives.
    #[test]
    fn reply_decoder_split_anywhere(
        values in proptest::collection::vec(value(), 1..4),
        proto in protocol(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut bytes = Vec::new();
        for v in &values {
            bytes.extend_from_slice(&encoded(v, proto));
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        let mut decoder = ReplyDecoder::default();
        let mut got = Vec::new();
        for w in points.windows(2) {
            decoder.extend_from_slice(&bytes[w[0]..w[1]]);
            while let Some(v) = decoder.next_value().unwrap() {
                got.push(v);
            }
        }
        let expected: Vec<Value> = values.iter().map(|v| expected_after(v, proto)).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(decoder.buffered_bytes(), 0);
    }

    /// A frame split in two parses the same once both halves are there,
    /// and the first half alone is incomplete.
    #[test]
    fn frames_split_at_every_position(v in value(), proto in protocol(), args in command()) {
        let reply = encoded(&v, proto);
        let whole = parse_value(&reply).unwrap();
        for cut in 0..=reply.len() {
            let mut joined = reply[..cut].to_vec();
            if cut < reply.len() {
                prop_assert_eq!(parse_value(&joined), Ok(None));
            }
            joined.extend_from_slice(&reply[cut..]);
            prop_assert_eq!(parse_value(&joined).unwrap(), whole.clone());
        }
        let request = encoded_command(&args);
        for cut in 0..=request.len() {
            let mut decoder = RequestDecoder::default();
            decoder.extend_from_slice(&request[..cut]);
            let early = decoder.next_command().unwrap();
            prop_assert_eq!(early.is_some(), cut == request.len());
            decoder.extend_from_slice(&request[cut..]);
            let cmd = early.or_else(|| decoder.next_command().unwrap()).unwrap();
            prop_assert_eq!(as_vecs(cmd), args.clone());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_value(&bytes);
        let _ = parse_command(&bytes, &Limits::default());
        let small = Limits { args_max: 3, bulk_bytes_max: 5, inline_bytes_max: 10, multibulk_header_bytes_max: 4, request_bytes_max: 40 };
        let _ = parse_command(&bytes, &small);
        let mut decoder = RequestDecoder::new(small);
        decoder.extend_from_slice(&bytes);
        while let Ok(Some(_)) = decoder.next_command() {}
    }

    /// Random bytes that look like RESP (markers, digits, CRLFs) reach deeper
    /// into the parsers than uniform noise.
    #[test]
    fn resp_like_bytes_never_panic(parts in proptest::collection::vec(prop_oneof![
        Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"%".to_vec()), Just(b"~".to_vec()), Just(b"=".to_vec()),
        Just(b"\r\n".to_vec()), Just(b"-".to_vec()), Just(b"1".to_vec()), Just(b"3".to_vec()), Just(b"0".to_vec()),
        Just(b"#t".to_vec()), Just(b",".to_vec()), Just(b"_".to_vec()), Just(b"\"".to_vec()), Just(b"'".to_vec()),
        Just(b" ".to_vec()), Just(b"\\x".to_vec()), Just(b"a".to_vec()), Just(b"\n".to_vec()),
    ], 0..60)) {
        let bytes: Vec<u8> = parts.concat();
        let _ = parse_value(&bytes);
        let _ = parse_value_with(&bytes, &ReplyLimits { depth_max: 2, bulk_bytes_max: 3, aggregate_len_max: 3, line_bytes_max: 4 });
        let _ = parse_command(&bytes, &Limits::default());
    }

    /// A declared length above a limit is an error as soon as the length is
    /// read, with none of the data present.
    #[test]
    fn declared_lengths_above_limits_error_early(excess in 1usize..1_000_000, small_limit in 1usize..10_000) {
        let limits = Limits { bulk_bytes_max: small_limit, args_max: small_limit, ..Limits::default() };
        let too_big = small_limit + excess;
        let bulk = format!("*1\r\n${too_big}\r\n");
        prop_assert_eq!(parse_command(bulk.as_bytes(), &limits), Err(ProtocolError::InvalidBulkLength));
        let count = format!("*{too_big}\r\n");
        prop_assert_eq!(parse_command(count.as_bytes(), &limits), Err(ProtocolError::InvalidMultibulkLength));
        let inline = vec![b'a'; limits.inline_bytes_max + 1];
        prop_assert_eq!(parse_command(&inline, &limits), Err(ProtocolError::InlineTooBig));

        let reply_limits = ReplyLimits { bulk_bytes_max: small_limit, aggregate_len_max: small_limit, ..ReplyLimits::default() };
        for marker in ["$", "=", "!"] {
            let reply = format!("{marker}{too_big}\r\n");
            prop_assert_eq!(parse_value_with(reply.as_bytes(), &reply_limits), Err(ProtocolError::InvalidBulkLength));
        }
        for marker in ["*", "%", "~", ">"] {
            let reply = format!("{marker}{too_big}\r\n");
            prop_assert_eq!(parse_value_with(reply.as_bytes(), &reply_limits), Err(ProtocolError::InvalidAggregateLength));
        }
    }
}

#[test]
fn nan_round_trips() {
    for proto in [Protocol::Resp2, Protocol::Resp3] {
        let bytes = encoded(&Value::Double(f64::NAN), proto);
        let back = parse_value(&bytes).unwrap().unwrap().0;
        match (proto, back) {
            (Protocol::Resp3, Value::Double(d)) => assert!(d.is_nan()),
            (Protocol::Resp2, Value::Bulk(b)) => assert_eq!(&b[..], b"nan"),
            (_, other) => panic!("{other:?}"),
        }
    }
}
