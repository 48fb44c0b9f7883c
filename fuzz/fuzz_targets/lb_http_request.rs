//! The balancer's HTTP/1.1 fast-path request parser (`rampart_lb::fast`): any bytes give a
//! decision (simple, partial, hand off to hyper, bad), never a panic; a simple request consumed
//! at most the input and its body fits the bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The body bound the parser is given (the fast path's `retries.body_bytes_max`).
const BODY_MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let (kind, consumed, body_len) = rampart_lb::fast::parse_head_for_fuzzing(data, BODY_MAX);
    assert!(consumed <= data.len());
    match kind {
        "simple" => {
            assert!(consumed > 0, "a simple request consumed nothing");
            assert!(body_len <= BODY_MAX);
        }
        "partial" | "handoff" => assert_eq!(consumed, 0, "{kind} consumed bytes"),
        "bad" => {}
        other => panic!("unknown decision {other}"),
    }
});
