//! Key expiry through the real RESP listener, in front of the in-memory replica (whose clock the
//! tests move forward): every expiry command's replies and errors, as redis-server 7.0 gives
//! them (checked with redis-cli against redis-server 7.0.15), and the edge cases (INCR/APPEND
//! keep the TTL, a plain SET clears it, EXPIREAT in the past deletes, GT/LT with no TTL, ...).

mod support;

use std::time::Duration;

use bytes::Bytes;
use rampart_kv::Limits;
use rampart_resp::client::RespClient;
use rampart_resp::Value;
use support::{config, start, TestServer};

/// Generous: these tests wait on replies, never on the clock.
const DEADLINE: Duration = Duration::from_secs(20);

async fn server() -> (TestServer, RespClient) {
    let s = start(config(|_| {}), Limits::default()).await;
    let c = RespClient::connect(s.resp).await.unwrap().with_read_timeout(DEADLINE);
    (s, c)
}

async fn cmd(c: &mut RespClient, line: &str) -> Value {
    let args: Vec<&str> = line.split(' ').collect();
    c.cmd_str(&args).await.unwrap()
}

async fn int(c: &mut RespClient, line: &str) -> i64 {
    match cmd(c, line).await {
        Value::Integer(n) => n,
        other => panic!("{line}: expected an integer, got {other:?}"),
    }
}

fn ok() -> Value {
    Value::SimpleString("OK".into())
}

fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::from(s.to_string()))
}

fn error(s: &str) -> Value {
    Value::Error(s.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The expiry the replica holds for `key` (Unix ms).
fn stored(s: &TestServer, key: &str) -> i64 {
    match s.replica.stored_expiry(key.as_bytes()) {
        Some(Some(at)) => at as i64,
        other => panic!("{key}: expected a stored expiry, found {other:?}"),
    }
}

/// Runs `line` (which must answer `want`) and checks that it gave `key` an expiry `ttl_ms`
/// after the time it ran at, and that TTL and PTTL agree with it.
async fn expires_in(s: &TestServer, c: &mut RespClient, line: &str, want: Value, key: &str, ttl_ms: i64) {
    let before = s.replica.now_ms() as i64;
    assert_eq!(cmd(c, line).await, want, "{line}");
    let after = s.replica.now_ms() as i64;
    let at = stored(s, key);
    assert!((before + ttl_ms..=after + ttl_ms).contains(&at), "{line}: expires at {at}");
    ttl_agrees(s, c, key).await;
}

/// TTL and PTTL of `key` answer what is left of its stored expiry by the wall clock around
/// the call (seconds rounded as Redis's `(ms + 500) / 1000`), and the EXPIRETIMEs the expiry.
async fn ttl_agrees(s: &TestServer, c: &mut RespClient, key: &str) {
    let at = stored(s, key);
    let before = now_ms();
    let pttl = int(c, &format!("PTTL {key}")).await;
    let ttl = int(c, &format!("TTL {key}")).await;
    let after = now_ms();
    assert!(((at - after).max(0)..=(at - before).max(0)).contains(&pttl), "PTTL {key} {pttl}");
    let secs = |ms: i64| (ms.max(0) + 500) / 1000;
    assert!((secs(at - after)..=secs(at - before)).contains(&ttl), "TTL {key} {ttl}");
    assert_eq!(int(c, &format!("PEXPIRETIME {key}")).await, at);
    assert_eq!(int(c, &format!("EXPIRETIME {key}")).await, (at + 500) / 1000);
}

#[tokio::test]
async fn bad_options_get_redis_errors() {
    let (s, mut c) = server().await;
    assert_eq!(cmd(&mut c, "SET k v").await, ok());
    let syntax = "ERR syntax error";
    let cases: &[(&str, &str)] = &[
        ("SET k v EX 10 PX 10", syntax),
        ("SET k v KEEPTTL EX 5", syntax),
        ("SET k v EX 5 KEEPTTL", syntax),
        ("SET k v EX", syntax),
        ("SET k v PERSIST", syntax),
        ("SET k v NX XX", syntax),
        ("SET k v EXAT abc NX XX", syntax),
        ("SET k v EX 0", "ERR invalid expire time in 'set' command"),
        ("SET k v EX -1", "ERR invalid expire time in 'set' command"),
        ("SET k v EXAT 0", "ERR invalid expire time in 'set' command"),
        ("SET k v EX 9223372036854775", "ERR invalid expire time in 'set' command"),
        ("SET k v EX 9223372036854776", "ERR invalid expire time in 'set' command"),
        ("SET k v PX 9223372036854775807", "ERR invalid expire time in 'set' command"),
        ("SET k v EX abc", "ERR value is not an integer or out of range"),
        ("SET k v PX 1.5", "ERR value is not an integer or out of range"),
        ("SET k v EX +5", "ERR value is not an integer or out of range"),
        ("SET k v EX 05", "ERR value is not an integer or out of range"),
        ("SETEX k 0 v", "ERR invalid expire time in 'setex' command"),
        ("SETEX k 9223372036854775 v", "ERR invalid expire time in 'setex' command"),
        ("SETEX k abc v", "ERR value is not an integer or out of range"),
        ("PSETEX k 0 v", "ERR invalid expire time in 'psetex' command"),
        ("SETEX k 10", "ERR wrong number of arguments for 'setex' command"),
        ("GETEX k EX 0", "ERR invalid expire time in 'getex' command"),
        ("GETEX k EXAT 9223372036854775807", "ERR invalid expire time in 'getex' command"),
        ("GETEX k PERSIST EX 5", syntax),
        ("GETEX k EX", syntax),
        ("GETEX k KEEPTTL", syntax),
        ("GETEX k NX", syntax),
        ("GETEX", "ERR wrong number of arguments for 'getex' command"),
        ("GETDEL", "ERR wrong number of arguments for 'getdel' command"),
        ("GETDEL k x", "ERR wrong number of arguments for 'getdel' command"),
        ("EXPIRE k 10 NX XX", "ERR NX and XX, GT or LT options at the same time are not compatible"),
        ("EXPIRE k 10 NX GT", "ERR NX and XX, GT or LT options at the same time are not compatible"),
        ("EXPIRE k 10 GT LT", "ERR GT and LT options at the same time are not compatible"),
        ("EXPIRE k 10 foo", "ERR Unsupported option foo"),
        ("EXPIRE k abc foo", "ERR Unsupported option foo"),
        ("EXPIRE k 9223372036854775", "ERR invalid expire time in 'expire' command"),
        ("EXPIRE k 9223372036854775807", "ERR invalid expire time in 'expire' command"),
        ("PEXPIRE k 9223372036854775807", "ERR invalid expire time in 'pexpire' command"),
        ("EXPIREAT k 9223372036854775807", "ERR invalid expire time in 'expireat' command"),
        ("EXPIRE k abc", "ERR value is not an integer or out of range"),
        ("EXPIRE k", "ERR wrong number of arguments for 'expire' command"),
        ("PERSIST", "ERR wrong number of arguments for 'persist' command"),
        ("TTL k x", "ERR wrong number of arguments for 'ttl' command"),
        ("PEXPIRETIME", "ERR wrong number of arguments for 'pexpiretime' command"),
    ];
    for (line, want) in cases {
        assert_eq!(cmd(&mut c, line).await, error(want), "{line}");
    }
    // None of them changed the key.
    assert_eq!(cmd(&mut c, "GET k").await, bulk("v"));
    assert_eq!(int(&mut c, "TTL k").await, -1);
    // Repeats are accepted (the last wins), as in Redis.
    expires_in(&s, &mut c, "SET k v EX 10 EX 20", ok(), "k", 20_000).await;
    assert_eq!(cmd(&mut c, "SET k v KEEPTTL KEEPTTL").await, ok());
    assert_eq!(cmd(&mut c, "GETEX k PERSIST PERSIST").await, bulk("v"));
    assert_eq!(int(&mut c, "EXPIRE k 10 NX NX").await, 1);
}

#[tokio::test]
async fn ttl_reads_answer_absent_none_and_remaining() {
    let (s, mut c) = server().await;
    for read in ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"] {
        assert_eq!(int(&mut c, &format!("{read} nosuch")).await, -2, "{read}");
    }
    assert_eq!(cmd(&mut c, "SET k v").await, ok());
    for read in ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"] {
        assert_eq!(int(&mut c, &format!("{read} k")).await, -1, "{read}");
    }
    expires_in(&s, &mut c, "SET k v EX 100", ok(), "k", 100_000).await;
    expires_in(&s, &mut c, "PSETEX k 1500 v", ok(), "k", 1_500).await;
    expires_in(&s, &mut c, "SET k v PX 2499", ok(), "k", 2_499).await;
    assert_eq!(cmd(&mut c, "SET k v PXAT 4102444800123").await, ok());
    assert_eq!(int(&mut c, "PEXPIRETIME k").await, 4_102_444_800_123);
    assert_eq!(int(&mut c, "EXPIRETIME k").await, 4_102_444_800);
    assert_eq!(cmd(&mut c, "SET k v EXAT 4102444800").await, ok());
    assert_eq!(int(&mut c, "PEXPIRETIME k").await, 4_102_444_800_000);
    expires_in(&s, &mut c, "SETEX k 50 v2", ok(), "k", 50_000).await;
    assert_eq!(cmd(&mut c, "GET k").await, bulk("v2"));
}

#[tokio::test]
async fn writes_keep_or_clear_the_ttl_as_redis_does() {
    let (s, mut c) = server().await;
    assert_eq!(cmd(&mut c, "SET n 1 EX 100").await, ok());
    assert_eq!(int(&mut c, "INCR n").await, 2);
    assert!(int(&mut c, "TTL n").await > 0, "INCR keeps the TTL");
    assert_eq!(int(&mut c, "APPEND n 0").await, 2);
    assert!(int(&mut c, "TTL n").await > 0, "APPEND keeps the TTL");
    assert_eq!(cmd(&mut c, "SET n 5 KEEPTTL").await, ok());
    assert!(int(&mut c, "TTL n").await > 0, "SET KEEPTTL keeps it");
    assert_eq!(cmd(&mut c, "GET n").await, bulk("5"));
    assert_eq!(cmd(&mut c, "SET n 6").await, ok());
    assert_eq!(int(&mut c, "TTL n").await, -1, "a plain SET clears it");
    assert_eq!(cmd(&mut c, "SET n 7 KEEPTTL").await, ok());
    assert_eq!(int(&mut c, "TTL n").await, -1, "KEEPTTL of no TTL is none");
    // SET .. GET with EX answers the old value and sets the TTL.
    expires_in(&s, &mut c, "SET n 8 GET EX 100", bulk("7"), "n", 100_000).await;
    assert_eq!(cmd(&mut c, "SET fresh 1 GET PX 100000").await, Value::Null);
    assert!(int(&mut c, "PTTL fresh").await > 0);
    // NX/XX with an expiry.
    let kept = stored(&s, "n");
    assert_eq!(cmd(&mut c, "SET n 9 NX EX 5").await, Value::Null);
    assert_eq!(stored(&s, "n"), kept, "a SET that did not write leaves the TTL");
    expires_in(&s, &mut c, "SET n 9 XX EX 5", ok(), "n", 5_000).await;
    // GETSET and MSET clear it.
    assert_eq!(cmd(&mut c, "GETSET n 10").await, bulk("9"));
    assert_eq!(int(&mut c, "TTL n").await, -1);
    assert_eq!(int(&mut c, "EXPIRE n 100").await, 1);
    assert_eq!(cmd(&mut c, "MSET n 11").await, ok());
    assert_eq!(int(&mut c, "TTL n").await, -1);
}

#[tokio::test]
async fn expire_conditions_follow_redis() {
    let (s, mut c) = server().await;
    assert_eq!(int(&mut c, "EXPIRE nosuch 10").await, 0, "no key, no expiry");
    assert_eq!(int(&mut c, "PERSIST nosuch").await, 0);
    assert_eq!(cmd(&mut c, "SET k v").await, ok());
    assert_eq!(int(&mut c, "PERSIST k").await, 0, "nothing to remove");
    // No TTL counts as infinite: GT never applies, LT always does.
    assert_eq!(int(&mut c, "EXPIRE k 100 GT").await, 0);
    assert_eq!(int(&mut c, "TTL k").await, -1);
    assert_eq!(int(&mut c, "EXPIRE k 100 XX").await, 0);
    assert_eq!(int(&mut c, "EXPIRE k 100 XX LT").await, 0, "XX LT needs a TTL");
    assert_eq!(int(&mut c, "EXPIRE k 100 LT").await, 1);
    assert_eq!(int(&mut c, "EXPIRE k 50 NX").await, 0);
    assert_eq!(int(&mut c, "EXPIRE k 200 LT").await, 0);
    assert_eq!(int(&mut c, "EXPIRE k 200 GT").await, 1);
    assert_eq!(int(&mut c, "EXPIRE k 100 XX GT").await, 0);
    assert_eq!(int(&mut c, "EXPIRE k 300 XX GT").await, 1);
    expires_in(&s, &mut c, "EXPIRE k 250 XX LT", Value::Integer(1), "k", 250_000).await;
    expires_in(&s, &mut c, "PEXPIRE k 400000 XX", Value::Integer(1), "k", 400_000).await;
    let at = now_ms() / 1000 + 1000;
    assert_eq!(int(&mut c, &format!("EXPIREAT k {at}")).await, 1);
    assert_eq!(int(&mut c, "EXPIRETIME k").await, at);
    assert_eq!(int(&mut c, &format!("PEXPIREAT k {}", at * 1000 + 7)).await, 1);
    assert_eq!(int(&mut c, "PEXPIRETIME k").await, at * 1000 + 7);
    assert_eq!(int(&mut c, "PERSIST k").await, 1);
    assert_eq!(int(&mut c, "TTL k").await, -1);
    // An expiry in the past deletes the key, and answers 1.
    assert_eq!(int(&mut c, "EXPIREAT k 1").await, 1);
    assert_eq!(int(&mut c, "EXISTS k").await, 0);
    assert_eq!(cmd(&mut c, "SET k v").await, ok());
    assert_eq!(int(&mut c, "EXPIRE k -1").await, 1);
    assert_eq!(cmd(&mut c, "GET k").await, Value::Null);
    assert_eq!(cmd(&mut c, "SET k v").await, ok());
    assert_eq!(int(&mut c, "PEXPIREAT k -5").await, 1);
    assert_eq!(int(&mut c, "EXISTS k").await, 0);
    assert_eq!(cmd(&mut c, "SET k v").await, ok());
    assert_eq!(int(&mut c, "EXPIRE k 0 GT").await, 0, "GT with no TTL does not delete");
    assert_eq!(int(&mut c, "EXPIRE k 0 LT").await, 1, "LT with no TTL does");
    assert_eq!(int(&mut c, "EXISTS k").await, 0);
}

#[tokio::test]
async fn getex_and_getdel() {
    let (s, mut c) = server().await;
    // An absent key answers nil before its time is checked, as in Redis.
    assert_eq!(cmd(&mut c, "GETEX nosuch EX 0").await, Value::Null);
    assert_eq!(cmd(&mut c, "GETEX nosuch EX 10").await, Value::Null);
    assert_eq!(cmd(&mut c, "GETEX nosuch").await, Value::Null);
    assert_eq!(cmd(&mut c, "GETDEL nosuch").await, Value::Null);
    assert_eq!(cmd(&mut c, "GETEX nosuch FOO").await, error("ERR syntax error"), "but not its syntax");
    assert_eq!(cmd(&mut c, "SET k v").await, ok());
    assert_eq!(cmd(&mut c, "GETEX k").await, bulk("v"));
    assert_eq!(int(&mut c, "TTL k").await, -1);
    expires_in(&s, &mut c, "GETEX k EX 100", bulk("v"), "k", 100_000).await;
    assert_eq!(cmd(&mut c, "GETEX k").await, bulk("v"));
    assert!(int(&mut c, "TTL k").await > 0, "GETEX without an option leaves the TTL");
    expires_in(&s, &mut c, "GETEX k PX 200000", bulk("v"), "k", 200_000).await;
    assert_eq!(cmd(&mut c, "GETEX k EXAT 4102444800").await, bulk("v"));
    assert_eq!(int(&mut c, "EXPIRETIME k").await, 4_102_444_800);
    assert_eq!(cmd(&mut c, "GETEX k PXAT 4102444800500").await, bulk("v"));
    assert_eq!(int(&mut c, "PEXPIRETIME k").await, 4_102_444_800_500);
    assert_eq!(cmd(&mut c, "GETEX k PERSIST").await, bulk("v"));
    assert_eq!(int(&mut c, "TTL k").await, -1);
    // EXAT in the past answers the value and deletes the key.
    assert_eq!(cmd(&mut c, "GETEX k EXAT 1").await, bulk("v"));
    assert_eq!(int(&mut c, "EXISTS k").await, 0);
    assert_eq!(cmd(&mut c, "SET k v EX 100").await, ok());
    assert_eq!(cmd(&mut c, "GETDEL k").await, bulk("v"));
    assert_eq!(int(&mut c, "EXISTS k").await, 0);
    assert_eq!(int(&mut c, "TTL k").await, -2);
    // Pipelined, GETDEL is a write among writes.
    let p = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
    let replies = c.pipeline(&[p(&["SET", "a", "1"]), p(&["GETDEL", "a"]), p(&["GETDEL", "a"])]).await.unwrap();
    assert_eq!(replies, vec![ok(), bulk("1"), Value::Null]);
}

#[tokio::test]
async fn an_expired_key_is_absent_to_every_command() {
    let (s, mut c) = server().await;
    assert_eq!(cmd(&mut c, "SET k v PX 5000").await, ok());
    assert_eq!(cmd(&mut c, "SET n 41 EX 5").await, ok());
    assert_eq!(cmd(&mut c, "SET keep v").await, ok());
    assert_eq!(cmd(&mut c, "TYPE k").await, Value::SimpleString("string".into()));
    s.replica.advance(5_000);
    assert!(s.replica.stored_expiry(b"k").is_some(), "still stored: only hidden");
    assert_eq!(cmd(&mut c, "GET k").await, Value::Null);
    assert_eq!(cmd(&mut c, "TYPE k").await, Value::SimpleString("none".into()));
    assert_eq!(int(&mut c, "EXISTS k n keep").await, 1);
    assert_eq!(int(&mut c, "TTL k").await, -2);
    assert_eq!(int(&mut c, "PEXPIRETIME k").await, -2);
    assert_eq!(int(&mut c, "DBSIZE").await, 1);
    assert_eq!(cmd(&mut c, "KEYS *").await, Value::Array(vec![bulk("keep")]));
    assert_eq!(int(&mut c, "STRLEN k").await, 0);
    assert_eq!(int(&mut c, "EXPIRE k 100").await, 0);
    assert_eq!(int(&mut c, "PERSIST k").await, 0);
    assert_eq!(cmd(&mut c, "GETEX k PERSIST").await, Value::Null);
    assert_eq!(cmd(&mut c, "GETDEL k").await, Value::Null);
    assert_eq!(int(&mut c, "INCR n").await, 1, "an expired counter starts again");
    assert_eq!(int(&mut c, "TTL n").await, -1, "without the old TTL");
    assert_eq!(cmd(&mut c, "SET k w NX").await, ok());
    assert_eq!(cmd(&mut c, "SET k2 v PX 100").await, ok());
    s.replica.advance(100);
    assert_eq!(cmd(&mut c, "SET k2 w XX").await, Value::Null, "XX sees no key");
    assert_eq!(cmd(&mut c, "SET k2 w GET").await, Value::Null, "GET answers no old value");
    assert_eq!(int(&mut c, "APPEND k2 x").await, 2);
}

#[tokio::test]
async fn command_lists_the_expiry_commands_as_redis_does() {
    let (_s, mut c) = server().await;
    let Value::Array(all) = cmd(&mut c, "COMMAND").await else { panic!("COMMAND answers an array") };
    let find = |name: &str| {
        all.iter()
            .find(|d| matches!(d, Value::Array(f) if f.first() == Some(&bulk(name))))
            .cloned()
            .unwrap_or_else(|| panic!("{name} listed"))
    };
    let flags = |v: &[&str]| Value::Array(v.iter().map(|f| Value::SimpleString(f.to_string())).collect());
    let want = |name: &str, arity: i64, f: &[&str]| {
        Value::Array(vec![
            bulk(name),
            Value::Integer(arity),
            flags(f),
            Value::Integer(1),
            Value::Integer(1),
            Value::Integer(1),
        ])
    };
    for (name, arity, f) in [
        ("setex", 4, &["write", "denyoom"][..]),
        ("psetex", 4, &["write", "denyoom"]),
        ("getex", -2, &["write", "fast"]),
        ("getdel", 2, &["write", "fast"]),
        ("expire", -3, &["write", "fast"]),
        ("pexpire", -3, &["write", "fast"]),
        ("expireat", -3, &["write", "fast"]),
        ("pexpireat", -3, &["write", "fast"]),
        ("persist", 2, &["write", "fast"]),
        ("ttl", 2, &["readonly", "fast"]),
        ("pttl", 2, &["readonly", "fast"]),
        ("expiretime", 2, &["readonly", "fast"]),
        ("pexpiretime", 2, &["readonly", "fast"]),
    ] {
        assert_eq!(find(name), want(name, arity, f), "{name}");
    }
}

/// One HTTP request on its own connection: the status, the head (lowercase) and the body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(DEADLINE, c.read_to_end(&mut reply)).await.expect("the server answers").unwrap();
    let reply = String::from_utf8(reply).unwrap();
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The value of header `name` (lowercase) in `head`.
fn header(head: &str, name: &str) -> Option<u64> {
    head.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok())
}

#[tokio::test]
async fn http_puts_with_a_ttl_and_reports_it() {
    let (s, mut c) = server().await;
    let before = now_ms() as u64;
    let (status, _, _) = http(s.http, "PUT", "/v1/kv/t?ttl_ms=100000", "v").await;
    assert_eq!(status, 200);
    let after = now_ms() as u64;
    let (status, head, body) = http(s.http, "GET", "/v1/kv/t", "").await;
    assert_eq!((status, body.as_str()), (200, "v"));
    let at = header(&head, "x-rampart-expires-at-ms").expect("the expiry header");
    assert!((before + 100_000..=after + 100_000).contains(&at), "expires at {at}");
    let ttl = header(&head, "x-rampart-ttl-ms").expect("the ttl header");
    assert!((1..=100_000).contains(&ttl), "ttl {ttl}");
    assert_eq!(int(&mut c, "PEXPIRETIME t").await, at as i64, "RESP sees the same expiry");
    let (_, _, list) = http(s.http, "GET", "/v1/kv?prefix=t", "").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["items"][0]["expires_at_ms"], serde_json::json!(at));
    assert!(list["items"][0]["ttl_ms"].as_u64().is_some_and(|t| t <= 100_000));
    // A PUT without ttl_ms clears it; GET then has no expiry headers.
    assert_eq!(http(s.http, "PUT", "/v1/kv/t", "w").await.0, 200);
    let (_, head, _) = http(s.http, "GET", "/v1/kv/t", "").await;
    assert_eq!(header(&head, "x-rampart-expires-at-ms"), None);
    assert_eq!(int(&mut c, "TTL t").await, -1);
    let (_, _, list) = http(s.http, "GET", "/v1/kv?prefix=t", "").await;
    assert!(!list.contains("expires_at_ms"), "{list}");
    // Once due, the key is gone for HTTP too.
    assert_eq!(http(s.http, "PUT", "/v1/kv/t?ttl_ms=1000", "v").await.0, 200);
    s.replica.advance(1_000);
    assert_eq!(http(s.http, "GET", "/v1/kv/t", "").await.0, 404);
}

#[tokio::test]
async fn http_refuses_a_bad_ttl_naming_it() {
    let (s, _c) = server().await;
    for (q, why) in [
        ("ttl_ms=0", "must be positive"),
        ("ttl_ms=-5", "must be positive"),
        ("ttl_ms=abc", "is not an integer"),
        ("ttl_ms=1.5", "is not an integer"),
        ("ttl_ms=", "is not an integer"),
        ("ttl_ms=9223372036854775807", "is too large"),
        ("ttl_ms=99999999999999999999", "is not an integer"),
        ("ttl_ms=1000&cas=0", "ttl_ms cannot be combined with cas"),
    ] {
        let (status, _, body) = http(s.http, "PUT", &format!("/v1/kv/bad?{q}"), "v").await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains(why), "{q}: {body}");
    }
    assert_eq!(http(s.http, "GET", "/v1/kv/bad", "").await.0, 404, "nothing was written");
}
