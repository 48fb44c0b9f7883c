//! RESP2/RESP3, the Redis serialization protocol: values and their
//! encoding, a request parser for servers, a reply parser for clients, and a
//! small async client for tests and tools.
//!
//! - [`encode`]: a [`Value`] in either [`Protocol`], downgrading RESP3-only
//!   types for RESP2 connections.
//! - [`parse_command`] / [`RequestDecoder`]: multibulk and inline requests,
//!   within [`Limits`]. The decoder keeps a connection's buffer and resumes
//!   a partly received frame instead of re-parsing it.
//! - [`parse_value`] / [`ReplyDecoder`]: any RESP2 or RESP3 reply, within
//!   [`ReplyLimits`], parsed without recursion.
//! - [`client::RespClient`]: one connection, commands and pipelines.
//!
//! This crate knows the wire format only. It never executes a command and
//! never holds more than its limits allow: every declared length is checked
//! before the bytes it announces are waited for, and no input panics.
//!
//! ```
//! use bytes::BytesMut;
//! use rampart_resp::{encode, parse_command, Limits, Protocol, Value};
//!
//! let (args, used) = parse_command(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", &Limits::default())
//!     .unwrap()
//!     .unwrap();
//! assert_eq!(args, vec!["GET", "k"]);
//! assert_eq!(used, 20);
//!
//! let mut out = BytesMut::new();
//! encode(&Value::Map(vec![(Value::bulk("a"), Value::Integer(1))]), Protocol::Resp2, &mut out);
//! assert_eq!(&out[..], b"*2\r\n$1\r\na\r\n:1\r\n");
//! ```

pub mod client;
mod error;
mod reply;
mod request;
mod value;
mod wire;

pub use error::{ProtocolError, ShownByte};
pub use reply::{parse_value, parse_value_with, ReplyDecoder, ReplyLimits};
pub use request::{
    encode_command, parse_command, Limits, RequestDecoder, DEFAULT_ARGS_MAX, DEFAULT_BULK_BYTES_MAX,
    DEFAULT_INLINE_BYTES_MAX, DEFAULT_MULTIBULK_HEADER_BYTES_MAX, DEFAULT_REQUEST_BYTES_MAX,
};
pub use value::{encode, encode_to_vec, format_double, Protocol, Value};
